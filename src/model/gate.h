// Gate(x) = x ⊙ sigmoid(fc(x)), fc a D×D Linear without bias.
#pragma once
#include <torch/torch.h>

namespace bakallm {

class GateImpl : public torch::nn::Module {
 public:
  explicit GateImpl(int64_t dim)
      : fc(register_module("fc", torch::nn::Linear(torch::nn::LinearOptions(dim, dim).bias(false)))) {}
  torch::Tensor forward(const torch::Tensor& x) { return x * torch::sigmoid(fc(x)); }

  torch::nn::Linear fc;
};
TORCH_MODULE(Gate);

}  // namespace bakallm
