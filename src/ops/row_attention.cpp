#include "ops/row_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops/decode_pool.h"
#include "ops/exp_row.h"
#include "ops/fast_tensor.h"
#include "ops/simd.h"
#include "ops/trace.h"

namespace bakallm {

namespace {

using torch::Tensor;

#define BAKALLM_SIMD_LOOPS "ops/row_attention_loops.inc"
#include "ops/simd_targets.inc"

// Rows prefetched ahead in each stream of keys or values (4 measured the same as 2).
constexpr int64_t kAhead = 2;

// One task: row (g, i) against keys [j0, j1), T float or bfloat16 bits.
// Writes its max, its sum of exp(s - max) and Σ exp(s_j - max) V_j into
// PARTIAL [Dv + 2]. Four keys at a time, one from each quarter of the keys
// (four streams read in order), then the last few one by one. BFloat16
// keys and values pair with q and the sum in paired order (ops/simd.h's
// load2): q comes in that order, the sum is put back in its own.
template <class T>
void partial_row(const float* q, const T* K, int64_t sK, const T* V, int64_t sV, int64_t F, int64_t Dv, int64_t j0,
                 int64_t j1, float scale, float* partial) {
  constexpr bool kPaired = std::is_same_v<T, uint16_t>;
  const Isa isa = kernel_isa();
  thread_local std::vector<float> s, paired_acc;
  s.resize(j1 - j0);
  // Keys j0 + i, + part, + 2·part, + 3·part side by side: four streams, each read in order; then the last few.
  const int64_t part = (j1 - j0) / 4;
  for (int64_t i = 0; i < part; ++i)
    BAKALLM_ON_ISA(isa, dot4(q, K + (j0 + i) * sK, part * sK, kAhead * sK, F, scale, &s[i], part));
  for (int64_t j = j0 + 4 * part; j < j1; ++j) s[j - j0] = BAKALLM_ON_ISA(isa, dot(q, K + j * sK, F)) * scale;
  const auto [m, sum] = exp_row_(s.data(), j1 - j0);
  float* acc = partial + 2;
  if constexpr (kPaired) {
    paired_acc.resize(Dv);
    acc = paired_acc.data();
  }
  std::fill(acc, acc + Dv, 0.0f);
  for (int64_t i = 0; i < part; ++i)
    BAKALLM_ON_ISA(isa, axpy4(&s[i], part, V + (j0 + i) * sV, part * sV, kAhead * sV, acc, Dv));
  for (int64_t j = j0 + 4 * part; j < j1; ++j) BAKALLM_ON_ISA(isa, axpy(s[j - j0], V + j * sV, acc, Dv));
  if constexpr (kPaired) from_paired_order(acc, Dv, isa_lanes(isa), partial + 2);
  partial[0] = m;
  partial[1] = sum;
}

}  // namespace

Tensor row_attention(const Tensor& q_in, const Tensor& K, const Tensor& V, const AttentionMask& mask, double scale) {
  BAKALLM_TRACE("row_attention");
  TORCH_CHECK(q_in.dim() == 3 && K.dim() == 3 && V.dim() == 3 && q_in.size(0) == K.size(0) && K.size(0) == V.size(0) &&
                  K.size(1) == V.size(1) && q_in.size(2) == K.size(2),
              "row_attention: q [G, Tq, F], K [G, Tk, F], V [G, Tk, Dv], got ", q_in.sizes(), " ", K.sizes(), " ",
              V.sizes());
  const auto kv = K.scalar_type();
  TORCH_CHECK(q_in.scalar_type() == torch::kFloat && (kv == torch::kFloat || kv == torch::kBFloat16) &&
                  V.scalar_type() == kv && K.device().is_cpu() && V.device().is_cpu() && K.stride(2) == 1 &&
                  V.stride(2) == 1,
              "row_attention: float32 q, float32 or bfloat16 K and V, CPU tensors, features contiguous");
  const auto q = q_in.contiguous();
  const int64_t G = q.size(0), Tq = q.size(1), F = q.size(2), Tk = K.size(1), Dv = V.size(2);
  const auto keep = mask.keep_past.defined() ? mask.keep_past.to(torch::kBool).contiguous() : Tensor();
  // The keys row (g, i) sees: [lo, hi).
  auto range = [&](int64_t g, int64_t i) {
    const int64_t lo = keep.defined() && !keep.data_ptr<bool>()[g] ? mask.past : 0;
    return std::pair{lo, mask.causal ? std::min(Tk, mask.before + i + 1) : Tk};
  };
  for (int64_t g = 0; g < G; ++g)
    for (int64_t i = 0; i < Tq; ++i) {
      const auto [lo, hi] = range(g, i);
      TORCH_CHECK(hi > lo, "row_attention: row ", i, " of matrix ", g, " sees no key");
    }
  // Keys split into as many parts as threads, each at least 64 keys.
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), Tk / 64));
  std::vector<float> partial(G * Tq * parts * (Dv + 2));
  const float* pq = q.data_ptr<float>();
  std::vector<float> paired_q;  // bfloat16 keys: each row of q once in paired order, for all its parts
  if (kv == torch::kBFloat16) {
    paired_q.resize(G * Tq * F);
    for (int64_t row = 0; row < G * Tq; ++row)
      to_paired_order(pq + row * F, F, isa_lanes(kernel_isa()), paired_q.data() + row * F);
    pq = paired_q.data();
  }
  parallel_rows(G * Tq, 0, G * Tq * parts, 1, [&](int64_t t0, int64_t t1) {  // decoding's: on the decode pool
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t row = t / parts, part = t % parts, g = row / Tq, i = row % Tq;
      const auto [lo, hi] = range(g, i);
      const int64_t per = (hi - lo + parts - 1) / parts, j0 = std::min(hi, lo + part * per), j1 = std::min(hi, j0 + per);
      float* out = partial.data() + t * (Dv + 2);
      if (j0 == j1) {  // nothing left for this part: it weighs nothing in the merge
        out[0] = -std::numeric_limits<float>::infinity();
        out[1] = 0;
        std::fill(out + 2, out + 2 + Dv, 0.0f);
        continue;
      }
      const auto attend = [&](const auto* pK, const auto* pV) {
        partial_row(pq + (g * Tq + i) * F, pK + g * K.stride(0), K.stride(1), pV + g * V.stride(0), V.stride(1), F,
                    Dv, j0, j1, static_cast<float>(scale), out);
      };
      if (kv == torch::kBFloat16)
        attend(reinterpret_cast<const uint16_t*>(K.data_ptr<at::BFloat16>()),
               reinterpret_cast<const uint16_t*>(V.data_ptr<at::BFloat16>()));
      else
        attend(K.data_ptr<float>(), V.data_ptr<float>());
    }
  });
  auto y = empty_rows({G, Tq, Dv}, q.scalar_type(), q.device());
  float* py = y.data_ptr<float>();
  for (int64_t row = 0; row < G * Tq; ++row) {  // merge the parts: rescale each to the row's max
    const float* first = partial.data() + row * parts * (Dv + 2);
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t p = 0; p < parts; ++p) m = std::max(m, first[p * (Dv + 2)]);
    float sum = 0;
    float* out = py + row * Dv;
    std::fill(out, out + Dv, 0.0f);
    for (int64_t p = 0; p < parts; ++p) {
      const float* part = first + p * (Dv + 2);
      if (part[1] == 0) continue;
      const float w = std::exp(part[0] - m);
      sum += w * part[1];
      for (int64_t d = 0; d < Dv; ++d) out[d] += w * part[2 + d];
    }
    for (int64_t d = 0; d < Dv; ++d) out[d] /= sum;
  }
  return y;
}

}  // namespace bakallm
