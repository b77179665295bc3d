// The LayerNorm every part of the model uses: torch.nn.LayerNorm over the
// last DIM features with weight and bias (eps 1e-5 unless a config says), whose
// forward on a few rows at inference (decoding) runs ops/row_norm.h, one
// pass per row, and otherwise torch's layer_norm.
#pragma once
#include <torch/torch.h>

#include "ops/row_norm.h"

namespace bakallm {

class LayerNormImpl : public torch::nn::LayerNormImpl {
 public:
  using torch::nn::LayerNormImpl::LayerNormImpl;
  torch::Tensor forward(const torch::Tensor& x) {
    if (layer_norm_rows_can(x, weight, bias)) return layer_norm_rows(x, weight, bias, options.eps());
    return torch::nn::LayerNormImpl::forward(x);
  }
};
TORCH_MODULE(LayerNorm);

inline LayerNorm layer_norm(int64_t dim, double eps = 1e-5) {
  return LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

}  // namespace bakallm
