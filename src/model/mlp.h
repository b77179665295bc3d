// mlp(h) = fc_down( fc_up(h) ⊙ act(fc_gate(h)) ); fc_up, fc_gate D→I, fc_down I→D.
// act is ReLU in the prototype (config `activation`: relu, silu, gelu).
#pragma once
#include <torch/torch.h>

#include "model/config.h"
#include "model/linear.h"
#include "ops/gate.h"

namespace bakallm {

// The configured activation, elementwise (gelu is the exact, erf one).
inline torch::Tensor activate(const torch::Tensor& x, Activation activation) {
  return activation == Activation::kRelu ? torch::relu(x) : activation == Activation::kSilu ? torch::silu(x) : torch::gelu(x);
}

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t inner, Activation activation = Activation::kRelu)
      : fc_up(register_module("fc_up", Linear(dim, inner))),
        fc_gate(register_module("fc_gate", Linear(dim, inner))),
        fc_down(register_module("fc_down", Linear(inner, dim))),
        activation_(activation) {}

  // The inner activations [B, T, I] stay in the products' dtype (bfloat16
  // when they compute in it: ops/matmul.h's inner_dtype); the output is h's.
  torch::Tensor forward(const torch::Tensor& h) {          // [B, T, D] -> [B, T, D]
    return fc_down->forward_in(inner(h), h.scalar_type());
  }
  // The same where only a gate reads the output (model/block.h's combine):
  // in the products' dtype too, as torch.autocast leaves a Linear's output.
  torch::Tensor gated(const torch::Tensor& h) { return fc_down->inner(inner(h)); }  // [B, T, D]

  Linear fc_up, fc_gate, fc_down;

 private:
  torch::Tensor inner(const torch::Tensor& h) {              // [B, T, D] -> [B, T, I]
    const auto g = fc_gate->inner(h);                        // [B, T, I]
    const auto u = fc_up->inner(h);                          // [B, T, I]
    return activation_ == Activation::kRelu ? relu_gate(u, g) : u * activate(g, activation_);  // relu: one op (ops/gate.h)
  }

  Activation activation_;
};
TORCH_MODULE(Mlp);

}  // namespace bakallm
