#include "ops/q8.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>

#include "ops/matmul.h"

// GCC 12 warns inside its own AVX-512 headers (their "undefined" pass-through operands).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

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

// Four output columns at a time: the activations are loaded once for the
// four, and four independent accumulators keep the FMA units busy.
__attribute__((target("avx512f,avx512bw"))) void q8_rows_avx512(const float* a, int64_t M, int64_t K,
                                                                 const int8_t* q, const float* s, float* y,
                                                                 int64_t N, int64_t n0, int64_t n1) {
  const int64_t blocks = K / kQ8Block;
  for (int64_t m = 0; m < M; ++m) {
    const float* am = a + m * K;
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      for (int64_t b = 0; b < blocks; ++b) {
        const __m512 x0 = _mm512_loadu_ps(am + b * 32), x1 = _mm512_loadu_ps(am + b * 32 + 16);
        for (int r = 0; r < 4; ++r) {
          const int8_t* qb = q + (n + r) * K + b * 32;
          const __m512 block = _mm512_fmadd_ps(x1, load16(qb + 16), _mm512_mul_ps(x0, load16(qb)));
          acc[r] = _mm512_fmadd_ps(block, _mm512_set1_ps(s[(n + r) * blocks + b]), acc[r]);
        }
      }
      for (int r = 0; r < 4; ++r) y[m * N + n + r] = _mm512_reduce_add_ps(acc[r]);
    }
    for (; n < n1; ++n) {  // the last columns of the range
      __m512 acc = _mm512_setzero_ps();
      for (int64_t b = 0; b < blocks; ++b) {
        const int8_t* qb = q + n * K + b * 32;
        const __m512 block = _mm512_fmadd_ps(_mm512_loadu_ps(am + b * 32 + 16), load16(qb + 16),
                                             _mm512_mul_ps(_mm512_loadu_ps(am + b * 32), load16(qb)));
        acc = _mm512_fmadd_ps(block, _mm512_set1_ps(s[n * blocks + b]), acc);
      }
      y[m * N + n] = _mm512_reduce_add_ps(acc);
    }
  }
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
