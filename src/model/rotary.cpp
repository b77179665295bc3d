#include "model/rotary.h"

#include "ops/rotary.h"

namespace bakallm {

RotaryImpl::RotaryImpl(int64_t dim, double base) : dim_(dim) {
  freqs = register_buffer("freqs", make_freqs(dim, base));
}

torch::Tensor RotaryImpl::make_freqs(int64_t dim, double base) {
  auto j = torch::arange(0, dim, 2, torch::kFloat);  // 2j
  return torch::pow(base, -j / static_cast<double>(dim));
}

torch::Tensor RotaryImpl::forward(const torch::Tensor& x, int64_t start) const {
  const int64_t T = x.size(-2);
  auto pos = torch::arange(start, start + T, freqs.options());           // [T]
  return rotate(x, pos.unsqueeze(1) * freqs.unsqueeze(0));               // angle [T, D/2]
}

torch::Tensor RotaryImpl::forward(const torch::Tensor& x, const torch::Tensor& starts) const {
  const int64_t T = x.size(-2);
  auto pos = starts.to(freqs.dtype()).unsqueeze(1) + torch::arange(T, freqs.options());  // [B, T]
  return rotate(x, pos.unsqueeze(2) * freqs);                            // angle [B, T, D/2]
}

torch::Tensor RotaryImpl::rotate(const torch::Tensor& x, const torch::Tensor& angle) const {
  return rotate_pairs(x, angle.cos().to(x.scalar_type()), angle.sin().to(x.scalar_type()), dim_);  // [B, T, 2D]
}

}  // namespace bakallm
