// A Linear layer (`weight` [out, in], optional `bias` [out]) whose product
// runs through matmul_nt, so the kernel and compute dtype are chosen in one
// place. Initialised as torch.nn.Linear: U(±1/sqrt(in)) for both.
#pragma once
#include <torch/torch.h>

namespace bakallm {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias = false);

  torch::Tensor forward(const torch::Tensor& x);  // [..., in] -> [..., out]
  void set_compute_dtype(torch::ScalarType dtype) { compute_ = dtype; }

  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined

 private:
  torch::ScalarType compute_ = torch::kFloat;
};
TORCH_MODULE(Linear);

}  // namespace bakallm
