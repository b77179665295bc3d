// What the hand-written AVX-512 code shares (the gates' loops, and the
// AVX-512 set of ops/simd.h that the decoding kernels' loops use): the target
// of their vector functions, which run only where cpu_has_avx512 (ops/cpu.h)
// says, their expf, and bfloat16's widening and rounding.
#pragma once
#include <immintrin.h>

#include <cstdint>

// GCC 12 warns inside its own AVX-512 headers (their "undefined" pass-through operands).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// AVX-512 F and BW: what cpu_has_avx512 asks for.
#define BAKALLM_AVX512 __attribute__((target("avx512f,avx512bw")))
// The same for loops left to the compiler's vectoriser, with 512-bit vectors
// preferred (GCC otherwise mixes in 256-bit ones): the EMA scan's loops,
// compiled a second time for CPUs with AVX-512.
#define BAKALLM_AVX512_WIDE __attribute__((target("avx512f,avx512bw,prefer-vector-width=512")))
// With DQ's 64-bit multiply besides (the dropout's hash, ops/dropout.cpp);
// its caller also asks __builtin_cpu_supports("avx512dq").
#define BAKALLM_AVX512DQ __attribute__((target("avx512f,avx512bw,avx512dq")))

namespace bakallm {

// exp of 16 float32 values, within 1 ulp over the whole float range
// (tests/ops/test_avx512.cpp sweeps it), NaN kept, -inf and values below
// -103.98 to 0, above 88.72 to inf: x = n·ln 2 + r with |r| <= ln 2 / 2
// (ln 2 in two parts, Cody and Waite), exp(r) by Cephes' expf polynomial,
// times 2^n by scalef (gradual underflow included). Written here because
// glibc's vector expf (libmvec's _ZGVeN16v_expf, the AVX2 set's exp) took
// 1.8x as long a vector (4.95-5.85 against 2.6-2.9 ns on the AMD EPYC Zen5)
// at 2.5 ulp: the head's softmax alone runs 131 M of them a tiny step.
BAKALLM_AVX512 inline __m512 exp16(__m512 x) {
  // the clamps as max(bound, x): the second operand comes back where either is NaN
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-110.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // x − n·ln 2, its leading bits exact
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));  // exp(r)
  return _mm512_scalef_ps(p, n);
}

// 16 bfloat16 values' bits as float32: a bfloat16's bits are a float32's upper half.
BAKALLM_AVX512 inline __m512 widen_bfloat16(__m256i bits) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// 16 bfloat16 values at P as float32.
BAKALLM_AVX512 inline __m512 widen_bfloat16(const uint16_t* p) {
  return widen_bfloat16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The first N (<= 16) bfloat16 values at P as float32, the rest 0.
BAKALLM_AVX512 inline __m512 widen_bfloat16(const uint16_t* p, __mmask16 n) {
  return widen_bfloat16(_mm512_castsi512_si256(_mm512_maskz_loadu_epi16(static_cast<__mmask32>(n), p)));
}

// 16 float32 values rounded to bfloat16 as c10::BFloat16 rounds them (to
// nearest, ties to even; NaN to 0x7fc0), the lanes of N stored at P.
BAKALLM_AVX512 inline void narrow_bfloat16(uint16_t* p, __mmask16 n, __m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
  rounded = _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
  _mm512_mask_cvtepi32_storeu_epi16(p, n, rounded);
}

// The lanes of the 16 values from I that lie before N: all 16, or the first N − I.
BAKALLM_AVX512 inline __mmask16 lanes(int64_t i, int64_t n) {
  return i + 16 <= n ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
}

// 16 float32 values, the lanes of K, loaded from P (the rest 0), or stored at
// P as they are or rounded to bfloat16 bits.
BAKALLM_AVX512 inline __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
BAKALLM_AVX512 inline void store16(float* p, __mmask16 k, __m512 v) { _mm512_mask_storeu_ps(p, k, v); }
BAKALLM_AVX512 inline void store16(uint16_t* p, __mmask16 k, __m512 v) { narrow_bfloat16(p, k, v); }

}  // namespace bakallm
