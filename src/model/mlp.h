// mlp(h) = fc_down( fc_up(h) ⊙ act(fc_gate(h)) ); fc_up, fc_gate D→I, fc_down I→D.
// act is ReLU in the prototype (config `activation`: relu, silu, gelu).
#pragma once
#include <torch/torch.h>

#include "model/config.h"
#include "model/linear.h"

namespace bakallm {

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t inner, Activation activation = Activation::kRelu)
      : fc_up(register_module("fc_up", Linear(dim, inner))),
        fc_gate(register_module("fc_gate", Linear(dim, inner))),
        fc_down(register_module("fc_down", Linear(inner, dim))),
        activation_(activation) {}

  torch::Tensor forward(const torch::Tensor& h) {          // [B, T, D] -> [B, T, D]
    auto g = fc_gate(h);                                    // [B, T, I]
    g = activation_ == Activation::kRelu ? torch::relu(g)
        : activation_ == Activation::kSilu ? torch::silu(g)
                                           : torch::gelu(g);
    return fc_down(fc_up(h) * g);
  }

  Linear fc_up, fc_gate, fc_down;

 private:
  Activation activation_;
};
TORCH_MODULE(Mlp);

}  // namespace bakallm
