// Gate(x) = x ⊙ sigmoid(fc(x)), fc a D×D Linear without bias.
#pragma once
#include <torch/torch.h>

#include "model/linear.h"
#include "ops/gate.h"

namespace bakallm {

class GateImpl : public torch::nn::Module {
 public:
  explicit GateImpl(int64_t dim)
      : fc(register_module("fc", Linear(dim, dim))) {}
  // fc(x) only feeds the gate: in the products' dtype (ops/matmul.h's inner_dtype)
  torch::Tensor forward(const torch::Tensor& x) { return sigmoid_gate(x, fc->inner(x)); }

  Linear fc;
};
TORCH_MODULE(Gate);

}  // namespace bakallm
