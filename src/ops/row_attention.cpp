#include "ops/row_attention.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu.h"
#include "ops/exp_row.h"

// GCC 12 warns inside its own AVX-512 headers (their "undefined" pass-through operands).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#define BAKALLM_AVX512 __attribute__((target("avx512f")))

namespace bakallm {

namespace {

using torch::Tensor;

BAKALLM_AVX512 float dot_avx512(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), acc1);
  }
  for (; k + 16 <= n; k += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), acc0);
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

// acc += p · v over N floats.
BAKALLM_AVX512 void axpy_avx512(float p, const float* v, float* acc, int64_t n) {
  const __m512 vp = _mm512_set1_ps(p);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) _mm512_storeu_ps(acc + k, _mm512_fmadd_ps(vp, _mm512_loadu_ps(v + k), _mm512_loadu_ps(acc + k)));
  for (; k < n; ++k) acc[k] += p * v[k];
}

float dot_portable(const float* a, const float* b, int64_t n) {
  float sum = 0;
  for (int64_t k = 0; k < n; ++k) sum += a[k] * b[k];
  return sum;
}

void axpy_portable(float p, const float* v, float* acc, int64_t n) {
  for (int64_t k = 0; k < n; ++k) acc[k] += p * v[k];
}

// One task: row (g, i) against keys [j0, j1). Writes its max, its sum of
// exp(s - max) and Σ exp(s_j - max) V_j into PARTIAL [Dv + 2]. The vector
// loops are chosen once per task, not per key.
void partial_row(const float* q, const float* K, int64_t sK, const float* V, int64_t sV, int64_t F, int64_t Dv,
                 int64_t j0, int64_t j1, float scale, float* partial) {
  const bool vector = cpu_has_avx512();
  const auto dot = vector ? dot_avx512 : dot_portable;
  const auto axpy = vector ? axpy_avx512 : axpy_portable;
  thread_local std::vector<float> s;
  s.resize(j1 - j0);
  for (int64_t j = j0; j < j1; ++j) s[j - j0] = dot(q, K + j * sK, F) * scale;
  const auto [m, sum] = exp_row_(s.data(), j1 - j0);
  float* acc = partial + 2;
  std::fill(acc, acc + Dv, 0.0f);
  for (int64_t j = j0; j < j1; ++j) axpy(s[j - j0], V + j * sV, acc, Dv);
  partial[0] = m;
  partial[1] = sum;
}

}  // namespace

Tensor row_attention(const Tensor& q_in, const Tensor& K, const Tensor& V, const AttentionMask& mask, double scale) {
  TORCH_CHECK(q_in.dim() == 3 && K.dim() == 3 && V.dim() == 3 && q_in.size(0) == K.size(0) && K.size(0) == V.size(0) &&
                  K.size(1) == V.size(1) && q_in.size(2) == K.size(2),
              "row_attention: q [G, Tq, F], K [G, Tk, F], V [G, Tk, Dv], got ", q_in.sizes(), " ", K.sizes(), " ",
              V.sizes());
  TORCH_CHECK(q_in.scalar_type() == torch::kFloat && K.scalar_type() == torch::kFloat &&
                  V.scalar_type() == torch::kFloat && K.device().is_cpu() && V.device().is_cpu() &&
                  K.stride(2) == 1 && V.stride(2) == 1,
              "row_attention: float32 CPU tensors, features contiguous");
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
  const float *pq = q.data_ptr<float>(), *pK = K.data_ptr<float>(), *pV = V.data_ptr<float>();
  at::parallel_for(0, G * Tq * parts, 1, [&](int64_t t0, int64_t t1) {
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
      partial_row(pq + (g * Tq + i) * F, pK + g * K.stride(0), K.stride(1), pV + g * V.stride(0), V.stride(1), F, Dv,
                  j0, j1, static_cast<float>(scale), out);
    }
  });
  auto y = torch::empty({G, Tq, Dv}, q.options());
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
