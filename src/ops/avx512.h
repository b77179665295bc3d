// What the hand-written AVX-512 kernels share (row_product, row_attention,
// exp_row, gate): the target of their vector functions, which run only where
// cpu_has_avx512 (ops/cpu.h) says, glibc's vector expf, and bfloat16's widening.
#pragma once
#include <immintrin.h>

#include <cstdint>

// GCC 12 warns inside its own AVX-512 headers (their "undefined" pass-through operands).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

// AVX-512 F and BW: what cpu_has_avx512 asks for.
#define BAKALLM_AVX512 __attribute__((target("avx512f,avx512bw")))

// glibc's vector expf for AVX-512 (libmvec, the variant `#pragma omp simd`
// calls): 16 lanes, within 4 ulp.
extern "C" __m512 _ZGVeN16v_expf(__m512 x);

namespace bakallm {

// 16 bfloat16 values as float32: a bfloat16's bits are a float32's upper half.
BAKALLM_AVX512 inline __m512 widen_bfloat16(const uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

}  // namespace bakallm
