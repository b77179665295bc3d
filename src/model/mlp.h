// mlp(h) = fc_down( fc_up(h) ⊙ relu(fc_gate(h)) ); fc_up, fc_gate D→I, fc_down I→D.
#pragma once
#include <torch/torch.h>

#include "model/linear.h"

namespace bakallm {

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t inner)
      : fc_up(register_module("fc_up", Linear(dim, inner))),
        fc_gate(register_module("fc_gate", Linear(dim, inner))),
        fc_down(register_module("fc_down", Linear(inner, dim))) {}

  torch::Tensor forward(const torch::Tensor& h) {               // [B, T, D] -> [B, T, D]
    return fc_down(fc_up(h) * torch::relu(fc_gate(h)));          // inner: [B, T, I]
  }

  Linear fc_up, fc_gate, fc_down;
};
TORCH_MODULE(Mlp);

}  // namespace bakallm
