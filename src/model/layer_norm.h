// The LayerNorm every part of the model uses: over the last DIM features,
// eps 1e-5, with weight and bias (torch.nn.LayerNorm's defaults).
#pragma once
#include <torch/torch.h>

namespace bakallm {

inline torch::nn::LayerNorm layer_norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5));
}

}  // namespace bakallm
