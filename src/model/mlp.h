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
    const auto g = fc_gate->inner(h);                        // [B, T, I]
    const auto u = fc_up->inner(h);                          // [B, T, I]
    const auto r = activation_ == Activation::kRelu ? relu_gate(u, g) : u * activate(g, activation_);  // relu: one op (ops/gate.h)
    return fc_down->forward_in(r, h.scalar_type());          // [B, T, D]
  }

  Linear fc_up, fc_gate, fc_down;

 private:
  Activation activation_;
};
TORCH_MODULE(Mlp);

}  // namespace bakallm
