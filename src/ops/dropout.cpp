#include "ops/dropout.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <mutex>

namespace bakallm {

namespace {

using torch::Tensor;

// splitmix64's finaliser: 64 well-mixed bits for a counter.
inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Elements are kept when their 16-bit uniform is at least this.
inline uint32_t threshold(double p) { return static_cast<uint32_t>(std::lround(p * 65536.0)); }

inline uint64_t block_hash(uint64_t seed, int64_t block) {
  return mix(seed + static_cast<uint64_t>(block) * 0x9E3779B97F4A7C15ull);
}

// Lane J (0..3) of a block's hash: its 16-bit uniform against threshold T.
inline bool keeps(uint64_t hash, int64_t j, uint32_t t) {
  return (static_cast<uint32_t>(hash >> (16 * j)) & 0xFFFFu) >= t;
}

// This process's rows start at this row of the global batch (data parallel).
std::atomic<int64_t> g_first_row{0};

// out = x ⊙ keep(seed, OFFSET + i) / (1 - p) over the flat index i; x contiguous float32.
Tensor apply_mask(const Tensor& x_in, uint64_t seed, double p, int64_t offset) {
  const auto x = x_in.contiguous();
  auto out = torch::empty_like(x);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t first = offset, last = offset + x.numel();
  const uint32_t t = threshold(p);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  at::parallel_for(first / 4, (last + 3) / 4, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const uint64_t h = block_hash(seed, b);
      const int64_t lo = std::max(4 * b, first), hi = std::min(4 * b + 4, last);
      for (int64_t i = lo; i < hi; ++i) dst[i - first] = keeps(h, i - 4 * b, t) ? src[i - first] * scale : 0.0f;
    }
  });
  return out;
}

// Where X's elements sit in the global batch's flat index (dim 0: the batch).
int64_t global_offset(const Tensor& x) {
  const int64_t first = g_first_row.load();
  return first && x.dim() > 0 && x.size(0) > 0 ? first * (x.numel() / x.size(0)) : 0;
}

class HashedDropout : public torch::autograd::Function<HashedDropout> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, double p, int64_t seed) {
    ctx->saved_data["p"] = p;
    ctx->saved_data["seed"] = seed;
    const int64_t offset = global_offset(x);
    ctx->saved_data["offset"] = offset;
    return apply_mask(x, static_cast<uint64_t>(seed), p, offset);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto seed = static_cast<uint64_t>(ctx->saved_data["seed"].toInt());
    return {apply_mask(grads[0], seed, ctx->saved_data["p"].toDouble(), ctx->saved_data["offset"].toInt()), Tensor(),
            Tensor()};
  }
};

}  // namespace

void set_dropout_first_row(int64_t first_row) { g_first_row = first_row; }

uint64_t draw_dropout_seed() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(gen)->random64();
}

Tensor dropout_scales(uint64_t seed, double p, int64_t batch, int64_t G, int64_t Tq, int64_t Tk, int64_t i0,
                      int64_t rows, int64_t j0, int64_t cols) {
  auto out = torch::empty({G, rows, cols}, torch::kFloat);
  float* dst = out.data_ptr<float>();
  const int64_t offset = g_first_row.load() * (G / batch) * Tq * Tk;  // as global_offset() of [G, Tq, Tk]
  const uint32_t t = threshold(p);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  at::parallel_for(0, G * rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t g = r / rows, i = i0 + r % rows;
      const int64_t first = offset + (g * Tq + i) * Tk + j0;  // flat index of column j0
      float* row = dst + r * cols;
      uint64_t h = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t e = first + c;
        if (c == 0 || e % 4 == 0) h = block_hash(seed, e / 4);  // one hash per four elements, as apply_mask
        row[c] = keeps(h, e % 4, t) ? scale : 0.0f;
      }
    }
  });
  return out;
}

bool dropout_keeps(uint64_t seed, int64_t i, double p) {
  return keeps(block_hash(seed, i / 4), i % 4, threshold(p));
}

Tensor hashed_dropout(const Tensor& x, double p, bool training) {
  if (!training || p <= 0.0) return x;
  if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat) return torch::dropout(x, p, true);
  return HashedDropout::apply(x, p, static_cast<int64_t>(draw_dropout_seed()));
}

}  // namespace bakallm
