#include "ops/row_product.h"

#include <ATen/Parallel.h>

#include <cstring>
#include <vector>

#include "ops/avx512.h"
#include "ops/cpu.h"

namespace bakallm {

namespace {

constexpr int64_t kBlock = 32;  // K is read 32 values at a time (a Q8_0 block)

// Each weight format: a block of 32 weights of column n as two float vectors
// (AVX-512), or one weight and a block's scale (portable).
struct FloatWeights {
  const float* w;
  int64_t K;
  BAKALLM_AVX512 void load(int64_t n, int64_t b, __m512* v) const {
    const float* p = w + n * K + b * kBlock;
    v[0] = _mm512_loadu_ps(p);
    v[1] = _mm512_loadu_ps(p + 16);
  }
  float at(int64_t n, int64_t k) const { return w[n * K + k]; }
  float scale(int64_t, int64_t) const { return 1.0f; }
  const char* address(int64_t n, int64_t b) const { return reinterpret_cast<const char*>(w + n * K + b * kBlock); }
  static constexpr int kBlockBytes = 128;
};

struct BFloat16Weights {
  const uint16_t* w;
  int64_t K;
  BAKALLM_AVX512 void load(int64_t n, int64_t b, __m512* v) const {
    const uint16_t* p = w + n * K + b * kBlock;
    v[0] = widen_bfloat16(p);
    v[1] = widen_bfloat16(p + 16);
  }
  float at(int64_t n, int64_t k) const {
    const uint32_t bits = static_cast<uint32_t>(w[n * K + k]) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  float scale(int64_t, int64_t) const { return 1.0f; }
  const char* address(int64_t n, int64_t b) const { return reinterpret_cast<const char*>(w + n * K + b * kBlock); }
  static constexpr int kBlockBytes = 64;
};

struct Q8Weights {
  const int8_t* q;
  const float* s;  // [N, K/32]
  int64_t K;
  BAKALLM_AVX512 static __m512 widen(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  BAKALLM_AVX512 void load(int64_t n, int64_t b, __m512* v) const {  // widened and scaled once per tile
    const int8_t* p = q + n * K + b * kBlock;
    const __m512 sc = _mm512_set1_ps(scale(n, b));
    v[0] = _mm512_mul_ps(widen(p), sc);
    v[1] = _mm512_mul_ps(widen(p + 16), sc);
  }
  float at(int64_t n, int64_t k) const { return static_cast<float>(q[n * K + k]); }
  float scale(int64_t n, int64_t b) const { return s[n * (K / kBlock) + b]; }
  const char* address(int64_t n, int64_t b) const { return reinterpret_cast<const char*>(q + n * K + b * kBlock); }
  static constexpr int kBlockBytes = 32;
};

// y[m, n] = Σ_b scale(n, b) · Σ_i a[m, 32b + i] · w(n, 32b + i), for n in [n0, n1).
template <class W>
void rows_portable(const float* a, int64_t M, int64_t K, const W& w, float* y, int64_t N, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t m = 0; m < M; ++m) {
      const float* am = a + m * K;
      float acc = 0;
      for (int64_t b = 0; b < K / kBlock; ++b) {
        float block = 0;
        for (int64_t i = 0; i < kBlock; ++i) block += am[b * kBlock + i] * w.at(n, b * kBlock + i);
        acc += block * w.scale(n, b);
      }
      y[m * N + n] = acc;
    }
  }
}

// Columns C (1 or 4) times rows R (1..4): each block's weights are loaded (and
// widened) once into 2·C vectors and used by R rows, with R·C independent
// accumulators (at most 16, beside 8 weight and 2 activation registers).
// Each block's weights AHEAD columns on are prefetched: the hardware
// prefetcher alone left bfloat16 and int8 rows read from memory at half the
// bandwidth float32's reached (BM_HeadProductFromMemory: 11 and 10 GB/s
// against 21).
template <int C, int R, class W>
BAKALLM_AVX512 inline void tile(const float* a, int64_t K, const W& w, float* y, int64_t N, int64_t n, int64_t m,
                                int64_t ahead) {
  __m512 acc[R][C];
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < C; ++c) acc[i][c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < K / kBlock; ++b) {
    __m512 v[C][2];
    for (int c = 0; c < C; ++c) {
      if (n + c + ahead < N)
        for (int l = 0; l < W::kBlockBytes; l += 64) _mm_prefetch(w.address(n + c + ahead, b) + l, _MM_HINT_T0);
      w.load(n + c, b, v[c]);
    }
    for (int i = 0; i < R; ++i) {
      const float* am = a + (m + i) * K + b * kBlock;
      const __m512 x0 = _mm512_loadu_ps(am), x1 = _mm512_loadu_ps(am + 16);
      for (int c = 0; c < C; ++c) acc[i][c] = _mm512_fmadd_ps(x1, v[c][1], _mm512_fmadd_ps(x0, v[c][0], acc[i][c]));
    }
  }
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < C; ++c) y[(m + i) * N + n + c] = _mm512_reduce_add_ps(acc[i][c]);
}

// Every row of columns [n, n+C): four rows at a time, then the rest.
template <int C, class W>
BAKALLM_AVX512 inline void columns(const float* a, int64_t M, int64_t K, const W& w, float* y, int64_t N, int64_t n,
                                   int64_t ahead) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) tile<C, 4>(a, K, w, y, N, n, m, ahead);
  switch (M - m) {
    case 3: tile<C, 3>(a, K, w, y, N, n, m, ahead); break;
    case 2: tile<C, 2>(a, K, w, y, N, n, m, ahead); break;
    case 1: tile<C, 1>(a, K, w, y, N, n, m, ahead); break;
    default: break;
  }
}

template <class W>
BAKALLM_AVX512 void rows_avx512(const float* a, int64_t M, int64_t K, const W& w, float* y, int64_t N, int64_t n0,
                                int64_t n1) {
  // About 6 kB ahead (8-19 columns of a tiny weight; measured best at 4-16 columns).
  const int64_t row_bytes = K / kBlock * W::kBlockBytes, ahead = std::max<int64_t>(4, (6144 + row_bytes - 1) / row_bytes);
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) columns<4>(a, M, K, w, y, N, n, ahead);
  for (; n < n1; ++n) columns<1>(a, M, K, w, y, N, n, ahead);  // the last columns of the range
}

template <class W>
void run(const float* a, int64_t M, int64_t K, const W& w, float* y, int64_t N, int64_t bytes_per_weight,
         bool allow_avx512) {
  const bool fast = allow_avx512 && cpu_has_avx512();
  // About 64 kB of weights per task: a tiny layer's 320 x 320 float32 product splits in two.
  const int64_t grain = std::max<int64_t>(4, (int64_t{1} << 16) / (K * bytes_per_weight));
  at::parallel_for(0, N, grain, [&](int64_t n0, int64_t n1) {
    if (fast) rows_avx512(a, M, K, w, y, N, n0, n1);
    else rows_portable(a, M, K, w, y, N, n0, n1);
  });
}

// x rounded to the nearest bfloat16 (ties to even), as c10::BFloat16 rounds.
float round_to_bfloat16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return x;  // NaN stays NaN
  u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

}  // namespace

bool row_product_avx512() { return cpu_has_avx512(); }

void row_product(const float* a, int64_t M, int64_t K, const void* w, const float* scales, RowWeights kind, float* y,
                 int64_t N, bool allow_avx512) {
  switch (kind) {
    case RowWeights::kFloat: run(a, M, K, FloatWeights{static_cast<const float*>(w), K}, y, N, 4, allow_avx512); break;
    case RowWeights::kBFloat16: {  // both operands in bfloat16: the rows rounded first
      thread_local std::vector<float> rounded;
      rounded.resize(M * K);
      for (int64_t i = 0; i < M * K; ++i) rounded[i] = round_to_bfloat16(a[i]);
      run(rounded.data(), M, K, BFloat16Weights{static_cast<const uint16_t*>(w), K}, y, N, 2, allow_avx512);
      break;
    }
    case RowWeights::kQ8: run(a, M, K, Q8Weights{static_cast<const int8_t*>(w), scales, K}, y, N, 1, allow_avx512); break;
  }
}

}  // namespace bakallm
