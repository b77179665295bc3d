// The input embedding: torch.nn.Embedding (vocab x D, no padding index, no
// max norm), whose lookup of a few ids at inference (a decoded token) copies
// the rows itself: libtorch's embedding is a reshape, an index_select and a
// view through the dispatcher, ~1.7% of a tiny token's time (AMD EPYC).
#pragma once
#include <torch/torch.h>

namespace bakallm {

class EmbeddingImpl : public torch::nn::EmbeddingImpl {
 public:
  using torch::nn::EmbeddingImpl::EmbeddingImpl;
  torch::Tensor forward(const torch::Tensor& ids);  // [...] int64 -> [..., D]
};
TORCH_MODULE(Embedding);

}  // namespace bakallm
