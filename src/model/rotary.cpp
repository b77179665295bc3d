#include "model/rotary.h"

#include "ops/fast_tensor.h"
#include "ops/rotary.h"

namespace bakallm {

RotaryImpl::RotaryImpl(int64_t dim, double base) : dim_(dim) {
  freqs = register_buffer("freqs", make_freqs(dim, base));
}

torch::Tensor RotaryImpl::make_freqs(int64_t dim, double base) {
  auto j = torch::arange(0, dim, 2, torch::kFloat);  // 2j
  return torch::pow(base, -j / static_cast<double>(dim));
}

RotaryImpl::Table RotaryImpl::table(int64_t positions) const {
  std::lock_guard<std::mutex> lock(table_mutex_);
  // Decoding's rows are views made in place (narrow_rows): of inference
  // tensors, which training's backward can't save; each mode its own table.
  auto& t = c10::InferenceMode::is_enabled() ? inference_table_ : table_;
  const bool current = t.cos.defined() && t.version == static_cast<int64_t>(freqs._version()) &&
                       t.cos.device() == freqs.device() && t.cos.scalar_type() == freqs.scalar_type();
  if (!current || t.cos.size(0) < positions) {
    torch::NoGradGuard no_grad;
    const int64_t P = std::max<int64_t>({positions, 2 * (current ? t.cos.size(0) : 0), 1024});
    const auto angle = torch::arange(P, freqs.options()).unsqueeze(1) * freqs.unsqueeze(0);  // [P, D/2]
    t = Table{angle.cos(), angle.sin(), static_cast<int64_t>(freqs._version())};
  }
  return t;
}

RotaryImpl::Angles RotaryImpl::angles(const torch::Tensor& x, int64_t start) const {
  const int64_t T = x.size(-2);
  const auto t = table(start + T);
  auto rows = [&](const torch::Tensor& c) {  // [T, D/2]
    const auto r = narrow_rows(c, 0, start, T);
    return r.scalar_type() == x.scalar_type() ? r : r.to(x.scalar_type());
  };
  return {rows(t.cos), rows(t.sin)};
}

RotaryImpl::Angles RotaryImpl::angles(const torch::Tensor& x, const torch::Tensor& starts) const {
  const int64_t B = x.size(0), T = x.size(-2);
  const auto pos = (starts.unsqueeze(1) + torch::arange(T, starts.options())).flatten();  // [B·T]
  const auto t = table(pos.max().item<int64_t>() + 1);
  auto rows = [&](const torch::Tensor& c) {                                              // [B, T, D/2]
    return c.index_select(0, pos.to(c.device())).view({B, T, -1}).to(x.scalar_type());
  };
  return {rows(t.cos), rows(t.sin)};
}

torch::Tensor RotaryImpl::forward(const torch::Tensor& x, int64_t start) const {
  const auto a = angles(x, start);
  return rotate_pairs(x, a.cos, a.sin, dim_);  // [B, T, 2D]
}

torch::Tensor RotaryImpl::forward(const torch::Tensor& x, const torch::Tensor& starts) const {
  const auto a = angles(x, starts);
  return rotate_pairs(x, a.cos, a.sin, dim_);  // [B, T, 2D]
}

}  // namespace bakallm
