#include "model/embedding.h"

#include <cstring>

#include "ops/fast_tensor.h"

namespace bakallm {

namespace {
constexpr int64_t kRowsCopied = 16;  // at most: a decoded token per stream of a batch
}  // namespace

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) {
  const bool copy = c10::InferenceMode::is_enabled() && ids.numel() <= kRowsCopied && ids.device().is_cpu() &&
                    ids.scalar_type() == torch::kLong && weight.device().is_cpu() && weight.is_contiguous() &&
                    !options.max_norm().has_value();
  if (!copy) return torch::nn::EmbeddingImpl::forward(ids);
  const int64_t V = weight.size(0), D = weight.size(1), bytes = D * static_cast<int64_t>(weight.element_size());
  auto sizes = ids.sizes().vec();
  sizes.push_back(D);
  auto out = empty_rows(sizes, weight.scalar_type(), weight.device());  // [..., D]
  const auto flat = ids.contiguous();
  const int64_t* id = flat.data_ptr<int64_t>();
  const auto* from = static_cast<const char*>(weight.data_ptr());
  auto* to = static_cast<char*>(out.data_ptr());
  for (int64_t i = 0; i < flat.numel(); ++i) {
    TORCH_CHECK_INDEX(id[i] >= 0 && id[i] < V, "embedding: token id ", id[i], " is out of the vocabulary of ", V);
    std::memcpy(to + i * bytes, from + id[i] * bytes, static_cast<size_t>(bytes));
  }
  return out;
}

}  // namespace bakallm
