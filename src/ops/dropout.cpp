#include "ops/dropout.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <mutex>

#include "ops/cpu.h"
#ifdef __x86_64__
#include "ops/avx512.h"
#endif

namespace bakallm {

namespace {

using torch::Tensor;

// splitmix64's constants: the counter's step (the golden ratio) and the
// finaliser's two multipliers, for the scalar hash and its AVX-512 lanes alike.
constexpr uint64_t kStep = 0x9E3779B97F4A7C15ull, kMix1 = 0xBF58476D1CE4E5B9ull, kMix2 = 0x94D049BB133111EBull;

// splitmix64's finaliser: 64 well-mixed bits for a counter.
inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * kMix1;
  z = (z ^ (z >> 27)) * kMix2;
  return z ^ (z >> 31);
}

// Elements are kept when their 16-bit uniform is at least this.
inline uint32_t threshold(double p) { return static_cast<uint32_t>(std::lround(p * 65536.0)); }

inline uint64_t block_hash(uint64_t seed, int64_t block) {
  return mix(seed + static_cast<uint64_t>(block) * kStep);
}

// Lane J (0..3) of a block's hash: its 16-bit uniform against threshold T.
inline bool keeps(uint64_t hash, int64_t j, uint32_t t) {
  return (static_cast<uint32_t>(hash >> (16 * j)) & 0xFFFFu) >= t;
}

// This process's rows start at this row of the global batch (data parallel).
std::atomic<int64_t> g_first_row{0};

// out = x ⊙ keep(seed, OFFSET + i) / (1 - p) over the flat index i; x contiguous float32
// (the multipliers of dropout_multipliers, 1024 elements at a time).
Tensor apply_mask(const Tensor& x_in, uint64_t seed, double p, int64_t offset) {
  const auto x = x_in.contiguous();
  auto out = torch::empty_like(x);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, x.numel(), 8192, [&](int64_t begin, int64_t end) {
    float mult[1024];
    for (int64_t c = begin; c < end; c += 1024) {
      const int64_t n = std::min<int64_t>(1024, end - c);
      dropout_multipliers(seed, p, offset + c, n, mult);
      for (int64_t k = 0; k < n; ++k) dst[c + k] = src[c + k] * mult[k];
    }
  });
  return out;
}

// Where X's elements sit in the global batch's flat index (dim 0: the batch).
int64_t global_offset(const Tensor& x) {
  return x.dim() > 0 && x.size(0) > 0 ? dropout_first_element(x.numel() / x.size(0)) : 0;
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

#ifdef __x86_64__
// dropout_multipliers with 8 hashes (32 decisions) a step: a hash's four
// 16-bit uniforms are its 64-bit lane's four 16-bit words, in the elements'
// order, so one unsigned 16-bit compare of the vector decides 32 elements.
BAKALLM_AVX512DQ void multipliers_avx512(uint64_t seed, uint32_t t, float scale, int64_t first, int64_t n,
                                          float* out) {
  const int64_t b0 = first / 4, skip = first - 4 * b0;  // the first block's elements before FIRST
  const __m512i step = _mm512_set1_epi64(static_cast<long long>(8 * kStep));
  const __m512i m1 = _mm512_set1_epi64(static_cast<long long>(kMix1));
  const __m512i m2 = _mm512_set1_epi64(static_cast<long long>(kMix2));
  const __m512i threshold = _mm512_set1_epi16(static_cast<short>(t));
  const __m512 kept = _mm512_set1_ps(scale);
  __m512i z = _mm512_add_epi64(
      _mm512_set1_epi64(static_cast<long long>(seed + static_cast<uint64_t>(b0) * kStep)),
      _mm512_mullo_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), _mm512_set1_epi64(static_cast<long long>(kStep))));
  alignas(64) float ahead[32];  // the first step's 32 multipliers, SKIP of them before the row
  for (int64_t e = -skip; e < n; e += 32, z = _mm512_add_epi64(z, step)) {
    __m512i h = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), m1);  // mix(), 8 lanes
    h = _mm512_mullo_epi64(_mm512_xor_si512(h, _mm512_srli_epi64(h, 27)), m2);
    h = _mm512_xor_si512(h, _mm512_srli_epi64(h, 31));
    const __mmask32 keep = _mm512_cmpge_epu16_mask(h, threshold);
    float* dst = e < 0 || e + 32 > n ? ahead : out + e;
    _mm512_storeu_ps(dst, _mm512_maskz_mov_ps(static_cast<__mmask16>(keep), kept));
    _mm512_storeu_ps(dst + 16, _mm512_maskz_mov_ps(static_cast<__mmask16>(keep >> 16), kept));
    if (dst == ahead)
      for (int64_t c = std::max<int64_t>(e, 0); c < std::min(e + 32, n); ++c) out[c] = ahead[c - e];
  }
}
#endif

void dropout_multipliers(uint64_t seed, double p, int64_t first, int64_t n, float* out) {
  const uint32_t t = threshold(p);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
#ifdef __x86_64__
  static const bool dq = __builtin_cpu_supports("avx512dq");
  if (dq && kernel_isa() == Isa::kAvx512) return multipliers_avx512(seed, t, scale, first, n, out);
#endif
  uint64_t h = 0;
  for (int64_t c = 0; c < n; ++c) {
    const int64_t e = first + c;
    if (c == 0 || e % 4 == 0) h = block_hash(seed, e / 4);  // one hash per four elements
    out[c] = keeps(h, e % 4, t) ? scale : 0.0f;
  }
}

int64_t dropout_first_element(int64_t per_row) { return g_first_row.load() * per_row; }

Tensor dropout_scales(uint64_t seed, double p, int64_t batch, int64_t G, int64_t Tq, int64_t Tk, int64_t i0,
                      int64_t rows, int64_t j0, int64_t cols) {
  auto out = torch::empty({G, rows, cols}, torch::kFloat);
  float* dst = out.data_ptr<float>();
  const int64_t offset = dropout_first_element(G / batch * Tq * Tk);  // as global_offset() of [G, Tq, Tk]
  at::parallel_for(0, G * rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t g = r / rows, i = i0 + r % rows;
      dropout_multipliers(seed, p, offset + (g * Tq + i) * Tk + j0, cols, dst + r * cols);
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
