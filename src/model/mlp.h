// mlp(h) = fc_down( fc_up(h) ⊙ relu(fc_gate(h)) ); fc_up, fc_gate D→I, fc_down I→D.
#pragma once
#include <torch/torch.h>

namespace bakallm {

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(int64_t dim, int64_t inner)
      : fc_up(register_module("fc_up", linear(dim, inner))),
        fc_gate(register_module("fc_gate", linear(dim, inner))),
        fc_down(register_module("fc_down", linear(inner, dim))) {}

  torch::Tensor forward(const torch::Tensor& h) {               // [B, T, D] -> [B, T, D]
    return fc_down(fc_up(h) * torch::relu(fc_gate(h)));          // inner: [B, T, I]
  }

  torch::nn::Linear fc_up, fc_gate, fc_down;

 private:
  static torch::nn::Linear linear(int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  }
};
TORCH_MODULE(Mlp);

}  // namespace bakallm
