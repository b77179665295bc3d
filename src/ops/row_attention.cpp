#include "ops/row_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/avx512.h"
#include "ops/cpu.h"
#include "ops/exp_row.h"

namespace bakallm {

namespace {

using torch::Tensor;

// Keys and values are float32, or bfloat16 (the decoder's cache beside
// bfloat16 or int8 weights: half the bytes a token reads); either way the
// arithmetic is float32. Load16 reads 16 of them as float32.
BAKALLM_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
BAKALLM_AVX512 inline __m512 load16(const at::BFloat16* p) {
  return widen_bfloat16(reinterpret_cast<const uint16_t*>(p));
}

template <class T>
BAKALLM_AVX512 float dot_avx512(const float* a, const T* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= n; k += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), load16(b + k), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), load16(b + k + 16), acc1);
  }
  for (; k + 16 <= n; k += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), load16(b + k), acc0);
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; k < n; ++k) sum += a[k] * static_cast<float>(b[k]);
  return sum;
}

// acc += p · v over N values.
template <class T>
BAKALLM_AVX512 void axpy_avx512(float p, const T* v, float* acc, int64_t n) {
  const __m512 vp = _mm512_set1_ps(p);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) _mm512_storeu_ps(acc + k, _mm512_fmadd_ps(vp, load16(v + k), _mm512_loadu_ps(acc + k)));
  for (; k < n; ++k) acc[k] += p * static_cast<float>(v[k]);
}

// The same columns of the next four rows (R + 4·S ...), once per cache line:
// four rows read side by side are four streams the hardware prefetcher follows
// poorly: base's bfloat16 keys came from memory at 14-15 GB/s without this,
// 18-21 with it (BM_RowAttention/2/1/1; from the caches 12% faster too).
template <class T>
BAKALLM_AVX512 inline void prefetch_next4(const T* r, int64_t s, int64_t k) {
  if ((k * static_cast<int64_t>(sizeof(T))) % 64 != 0) return;
  for (int i = 4; i < 8; ++i) _mm_prefetch(reinterpret_cast<const char*>(r + i * s + k), _MM_HINT_T0);
}

// Four keys at once (rows K, K + sK, ...): four independent sums, q read once.
template <class T>
BAKALLM_AVX512 void dot4_avx512(const float* a, const T* b, int64_t sb, int64_t n, float scale, float* out) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 x = _mm512_loadu_ps(a + k);
    prefetch_next4(b, sb, k);
    for (int r = 0; r < 4; ++r) acc[r] = _mm512_fmadd_ps(x, load16(b + r * sb + k), acc[r]);
  }
  for (int r = 0; r < 4; ++r) {
    float sum = _mm512_reduce_add_ps(acc[r]);
    for (int64_t t = k; t < n; ++t) sum += a[t] * static_cast<float>(b[r * sb + t]);
    out[r] = sum * scale;
  }
}

// acc += Σ_r p[r] · v_r over N values, four rows v_r = V + r · sV at once.
template <class T>
BAKALLM_AVX512 void axpy4_avx512(const float* p, const T* v, int64_t sv, float* acc, int64_t n) {
  const __m512 p0 = _mm512_set1_ps(p[0]), p1 = _mm512_set1_ps(p[1]), p2 = _mm512_set1_ps(p[2]), p3 = _mm512_set1_ps(p[3]);
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    prefetch_next4(v, sv, k);
    __m512 a = _mm512_loadu_ps(acc + k);
    a = _mm512_fmadd_ps(p0, load16(v + k), a);
    a = _mm512_fmadd_ps(p1, load16(v + sv + k), a);
    a = _mm512_fmadd_ps(p2, load16(v + 2 * sv + k), a);
    a = _mm512_fmadd_ps(p3, load16(v + 3 * sv + k), a);
    _mm512_storeu_ps(acc + k, a);
  }
  for (; k < n; ++k)
    for (int r = 0; r < 4; ++r) acc[k] += p[r] * static_cast<float>(v[r * sv + k]);
}

template <class T>
float dot_portable(const float* a, const T* b, int64_t n) {
  float sum = 0;
  for (int64_t k = 0; k < n; ++k) sum += a[k] * static_cast<float>(b[k]);
  return sum;
}

template <class T>
void axpy_portable(float p, const T* v, float* acc, int64_t n) {
  for (int64_t k = 0; k < n; ++k) acc[k] += p * static_cast<float>(v[k]);
}

// One task: row (g, i) against keys [j0, j1). Writes its max, its sum of
// exp(s - max) and Σ exp(s_j - max) V_j into PARTIAL [Dv + 2]. The vector
// loops are chosen once per task, not per key.
template <class T>
void partial_row(const float* q, const T* K, int64_t sK, const T* V, int64_t sV, int64_t F, int64_t Dv, int64_t j0,
                 int64_t j1, float scale, float* partial) {
  const bool vector = cpu_has_avx512();
  const auto dot = vector ? dot_avx512<T> : dot_portable<T>;
  const auto axpy = vector ? axpy_avx512<T> : axpy_portable<T>;
  thread_local std::vector<float> s;
  s.resize(j1 - j0);
  int64_t j = j0;
  if (vector)  // four keys at a time, the rest one by one
    for (; j + 4 <= j1; j += 4) dot4_avx512(q, K + j * sK, sK, F, scale, &s[j - j0]);
  for (; j < j1; ++j) s[j - j0] = dot(q, K + j * sK, F) * scale;
  const auto [m, sum] = exp_row_(s.data(), j1 - j0);
  float* acc = partial + 2;
  std::fill(acc, acc + Dv, 0.0f);
  j = j0;
  if (vector)  // four keys at a time, the rest one by one
    for (; j + 4 <= j1; j += 4) axpy4_avx512(&s[j - j0], V + j * sV, sV, acc, Dv);
  for (; j < j1; ++j) axpy(s[j - j0], V + j * sV, acc, Dv);
  partial[0] = m;
  partial[1] = sum;
}

}  // namespace

Tensor row_attention(const Tensor& q_in, const Tensor& K, const Tensor& V, const AttentionMask& mask, double scale) {
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
      const auto attend = [&](const auto* pK, const auto* pV) {
        partial_row(pq + (g * Tq + i) * F, pK + g * K.stride(0), K.stride(1), pV + g * V.stride(0), V.stride(1), F,
                    Dv, j0, j1, static_cast<float>(scale), out);
      };
      if (kv == torch::kBFloat16)
        attend(K.data_ptr<at::BFloat16>(), V.data_ptr<at::BFloat16>());
      else
        attend(K.data_ptr<float>(), V.data_ptr<float>());
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
