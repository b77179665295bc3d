#include "ops/q8.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>

#include "ops/matmul.h"

// GCC 12 warns inside its own AVX-512 headers (their "undefined" pass-through operands).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace bakallm {

namespace {

// Rows at most this many go through the int8 kernel; more are dequantized
// once and multiplied by oneDNN (the weight is then read once per M rows anyway).
constexpr int64_t kKernelRows = 16;

// y[m, n] = Σ_b scale[n, b] · Σ_i a[m, 32b + i] · q[n, 32b + i], for n in [n0, n1).
void q8_rows_portable(const float* a, int64_t M, int64_t K, const int8_t* q, const float* s, float* y, int64_t N,
                      int64_t n0, int64_t n1) {
  const int64_t blocks = K / kQ8Block;
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* qn = q + n * K;
    const float* sn = s + n * blocks;
    for (int64_t m = 0; m < M; ++m) {
      const float* am = a + m * K;
      float acc = 0;
      for (int64_t b = 0; b < blocks; ++b) {
        float block = 0;
        for (int64_t i = 0; i < kQ8Block; ++i) block += am[b * kQ8Block + i] * static_cast<float>(qn[b * kQ8Block + i]);
        acc += block * sn[b];
      }
      y[m * N + n] = acc;
    }
  }
}

// 16 int8 weights as floats.
__attribute__((target("avx512f,avx512bw"))) inline __m512 load16(const int8_t* q) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
}

// Columns C (1 or 4) times rows R (1..4) of the product: each block's int8
// weights are widened and scaled once (2·C vectors) and used by R rows, with
// R·C independent accumulators (at most 16, beside 8 weight and 2 activation
// registers).
template <int C, int R>
__attribute__((target("avx512f,avx512bw"))) inline void q8_tile(const float* a, int64_t K, const int8_t* q,
                                                                const float* s, float* y, int64_t N, int64_t n,
                                                                int64_t m) {
  const int64_t blocks = K / kQ8Block;
  __m512 acc[R][C];
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < C; ++c) acc[i][c] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m512 w[C][2];
    for (int c = 0; c < C; ++c) {
      const int8_t* qb = q + (n + c) * K + b * 32;
      const __m512 scale = _mm512_set1_ps(s[(n + c) * blocks + b]);
      w[c][0] = _mm512_mul_ps(load16(qb), scale);
      w[c][1] = _mm512_mul_ps(load16(qb + 16), scale);
    }
    for (int i = 0; i < R; ++i) {
      const float* am = a + (m + i) * K + b * 32;
      const __m512 x0 = _mm512_loadu_ps(am), x1 = _mm512_loadu_ps(am + 16);
      for (int c = 0; c < C; ++c) acc[i][c] = _mm512_fmadd_ps(x1, w[c][1], _mm512_fmadd_ps(x0, w[c][0], acc[i][c]));
    }
  }
  for (int i = 0; i < R; ++i)
    for (int c = 0; c < C; ++c) y[(m + i) * N + n + c] = _mm512_reduce_add_ps(acc[i][c]);
}

// Every row of columns [n, n+C): four rows at a time, then the rest.
template <int C>
__attribute__((target("avx512f,avx512bw"))) inline void q8_columns(const float* a, int64_t M, int64_t K,
                                                                   const int8_t* q, const float* s, float* y,
                                                                   int64_t N, int64_t n) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) q8_tile<C, 4>(a, K, q, s, y, N, n, m);
  switch (M - m) {
    case 3: q8_tile<C, 3>(a, K, q, s, y, N, n, m); break;
    case 2: q8_tile<C, 2>(a, K, q, s, y, N, n, m); break;
    case 1: q8_tile<C, 1>(a, K, q, s, y, N, n, m); break;
    default: break;
  }
}

// Columns outermost, four at a time: their int8 rows (4·K bytes) stay in L1
// while every activation row uses them, so M rows (the server's streams) read
// the weights from memory once, and widen each block once per four rows.
__attribute__((target("avx512f,avx512bw"))) void q8_rows_avx512(const float* a, int64_t M, int64_t K,
                                                                 const int8_t* q, const float* s, float* y,
                                                                 int64_t N, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) q8_columns<4>(a, M, K, q, s, y, N, n);
  for (; n < n1; ++n) q8_columns<1>(a, M, K, q, s, y, N, n);  // the last columns of the range
}

bool have_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return yes;
}

}  // namespace

bool q8_kernel_avx512() { return have_avx512(); }

Q8Weight quantize_q8(const torch::Tensor& w_in) {
  TORCH_CHECK(w_in.dim() == 2 && w_in.size(1) % kQ8Block == 0, "quantize_q8: need [N, K] with K a multiple of 32, got ",
              w_in.sizes());
  const auto w = w_in.detach().to(torch::kFloat).contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  const auto blocks = w.view({N, K / kQ8Block, kQ8Block});
  auto scales = blocks.abs().amax(-1) / 127.0;                                   // [N, K/32]
  const auto inv = torch::where(scales > 0, 1.0 / scales, torch::zeros_like(scales));
  auto q = (blocks * inv.unsqueeze(-1)).round().clamp(-127, 127).to(torch::kChar).view({N, K});
  return {q.contiguous(), scales.contiguous()};
}

torch::Tensor dequantize_q8(const Q8Weight& w, torch::ScalarType dtype) {
  const int64_t N = w.q.size(0), K = w.q.size(1);
  return (w.q.view({N, K / kQ8Block, kQ8Block}).to(torch::kFloat) * w.scales.unsqueeze(-1)).view({N, K}).to(dtype);
}

torch::Tensor matmul_nt_q8(const torch::Tensor& a_in, const Q8Weight& w, torch::ScalarType compute) {
  const int64_t N = w.q.size(0), K = w.q.size(1);
  TORCH_CHECK(a_in.size(-1) == K, "matmul_nt_q8: ", a_in.sizes(), " against a weight of ", K, " columns");
  const auto lead = a_in.sizes().slice(0, a_in.dim() - 1);
  const int64_t M = a_in.numel() / K;
  if (M > kKernelRows || !a_in.device().is_cpu()) {
    const auto y = matmul_nt(a_in, dequantize_q8(w, compute == torch::kBFloat16 ? torch::kBFloat16 : torch::kFloat), compute);
    return y.to(a_in.scalar_type());
  }
  const auto a = a_in.to(torch::kFloat).contiguous().view({M, K});
  auto y = torch::empty({M, N}, torch::kFloat);
  const float* ap = a.data_ptr<float>();
  const int8_t* qp = w.q.data_ptr<int8_t>();
  const float* sp = w.scales.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const bool fast = have_avx512();
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
    if (fast) q8_rows_avx512(ap, M, K, qp, sp, yp, N, n0, n1);
    else q8_rows_portable(ap, M, K, qp, sp, yp, N, n0, n1);
  });
  std::vector<int64_t> shape(lead.begin(), lead.end());
  shape.push_back(N);
  return y.view(shape).to(a_in.scalar_type());
}

}  // namespace bakallm
