// What the hand-written AVX-512 code shares (the gates' loops, and the
// AVX-512 set of ops/simd.h that the decoding kernels' loops use): the target
// of their vector functions, which run only where cpu_has_avx512 (ops/cpu.h)
// says, glibc's vector expf, and bfloat16's widening and rounding.
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

// glibc's vector expf for AVX-512 (libmvec, the variant `#pragma omp simd`
// calls): 16 lanes, within 4 ulp.
extern "C" __m512 _ZGVeN16v_expf(__m512 x);

namespace bakallm {

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
