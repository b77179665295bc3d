// The decoding kernels' vector loops are written once, against one of three
// instruction sets: AVX-512 (16 float lanes), AVX2 with FMA (8 lanes) and
// portable C++ (one lane). Each set is a struct of the same static functions
// on its float vector F; a kernel's loops are templates on nothing but `I`,
// the set, and are compiled once per set by ops/simd_targets.inc, each copy
// with its set's target (BAKALLM_TARGET). cpu_isa() (ops/cpu.h) says which
// copy runs. The same idea as Highway's foreach_target, on GCC's target
// attribute: one binary runs on every CPU this project meets.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "ops/avx512.h"
#include "ops/cpu.h"

// AVX2 and FMA: what cpu_isa asks for before choosing Isa::kAvx2.
#define BAKALLM_AVX2 __attribute__((target("avx2,fma")))

// glibc's vector expf for AVX2 (libmvec): 8 lanes, within 4 ulp.
extern "C" __m256 _ZGVdN8v_expf(__m256 x);

namespace bakallm {

// F rounded to bfloat16 as c10::BFloat16 rounds it (to nearest, ties to
// even; NaN to 0x7fc0), as its bits.
inline uint16_t bfloat16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

struct Avx512 {
  using F = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kTileRows = 4;  // row products: 4 rows x 4 columns of accumulators fit the 32 registers
  static constexpr int kTileColumns = 4;
  static constexpr int kChains = 1;  // accumulators a row and column: 16 in a tile, of 32 registers
  static constexpr bool kQ8Prefetched = true;  // int8 weights prefetched ahead (row_product_loops.inc)
  BAKALLM_AVX512 static F zero() { return _mm512_setzero_ps(); }
  static void held(F&) {}  // as the compiler chooses: not measured on AVX-512 (see Avx2::held)
  BAKALLM_AVX512 static F set1(float x) { return _mm512_set1_ps(x); }
  BAKALLM_AVX512 static F load(const float* p) { return _mm512_loadu_ps(p); }
  BAKALLM_AVX512 static F load(const uint16_t* p) { return widen_bfloat16(p); }  // bfloat16 bits
  BAKALLM_AVX512 static F load(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  // load2: 2·kLanes values (see the note above Portable).
  BAKALLM_AVX512 static void load2(const float* p, F& a, F& b) { a = load(p), b = load(p + kLanes); }
  BAKALLM_AVX512 static void load2(const int8_t* p, F& a, F& b) { a = load(p), b = load(p + kLanes); }
  BAKALLM_AVX512 static void load2(const uint16_t* p, F& even, F& odd) {
    const __m512i pairs = _mm512_loadu_si512(p);
    even = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  BAKALLM_AVX512 static void store(float* p, F x) { _mm512_storeu_ps(p, x); }
  BAKALLM_AVX512 static void store(uint16_t* p, F x) { narrow_bfloat16(p, 0xffff, x); }  // rounded, bfloat16 bits
  BAKALLM_AVX512 static F add(F a, F b) { return _mm512_add_ps(a, b); }
  BAKALLM_AVX512 static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  BAKALLM_AVX512 static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  BAKALLM_AVX512 static F max(F a, F b) { return _mm512_max_ps(a, b); }
  BAKALLM_AVX512 static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }  // a·b + c
  BAKALLM_AVX512 static F exp(F x) { return exp16(x); }  // ops/avx512.h: within 1 ulp
  BAKALLM_AVX512 static float sum(F x) { return _mm512_reduce_add_ps(x); }
  BAKALLM_AVX512 static float most(F x) { return _mm512_reduce_max_ps(x); }
};

struct Avx2 {
  using F = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kTileRows = 2;  // 16 registers: 2 rows x 4 accumulators, a weight vector, a row
  // Two weight rows side by side, each from its own stream read in order
  // (row_product_loops.inc): four adjacent rows side by side read at 13 GB/s
  // from memory on the AMD EPYC, one row at a time at 17, two streams 5-11%
  // faster than one for bfloat16.
  static constexpr int kTileColumns = 2;
  // Accumulators a row and column, summed at its end: one alone makes each
  // column's sum a chain of dependent FMAs, which bound [320, 320] from L2 at
  // 29-30 GB/s float32 and 14 bfloat16 on one core of the AMD EPYC; two,
  // 38-40 and 19-21 (BM_RowProductFromCache; bfloat16 also needs held()).
  // 2 rows x 2 columns x 2 of 16 registers.
  static constexpr int kChains = 2;
  // Int8 weights are not prefetched ahead: on the AMD EPYC their product is
  // bound by its widening, not by memory, and the prefetches' instructions
  // made a tiny int8 token ~10% slower (in-process A/B, session 18).
  static constexpr bool kQ8Prefetched = false;
  BAKALLM_AVX2 static F zero() { return _mm256_setzero_ps(); }
  BAKALLM_AVX2 static F set1(float x) { return _mm256_set1_ps(x); }
  BAKALLM_AVX2 static F load(const float* p) { return _mm256_loadu_ps(p); }
  BAKALLM_AVX2 static F load(const uint16_t* p) {  // a bfloat16's bits are a float32's upper half
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
  BAKALLM_AVX2 static F load(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  BAKALLM_AVX2 static void load2(const float* p, F& a, F& b) { a = load(p), b = load(p + kLanes); }
  BAKALLM_AVX2 static void load2(const int8_t* p, F& a, F& b) { a = load(p), b = load(p + kLanes); }
  // X held in a register: GCC otherwise folds its load into each instruction
  // that uses it, loading it again for each. Zen's loads are 128 bits: with
  // a row's values loaded once per column and bfloat16 pairs twice, loads
  // bound [320, 320] bfloat16 from L2 at 13-14 GB/s on one core; 19-21 held.
  BAKALLM_AVX2 static void held(F& x) { asm("" : "+x"(x)); }
  BAKALLM_AVX2 static void load2(const uint16_t* p, F& even, F& odd) {
    __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    asm("" : "+x"(pairs));  // loaded once for both halves
    even = _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(pairs, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  BAKALLM_AVX2 static void store(float* p, F x) { _mm256_storeu_ps(p, x); }
  BAKALLM_AVX2 static void store(uint16_t* p, F x) {  // rounded as bfloat16_bits, 8 bfloat16s
    const __m256i bits = _mm256_castps_si256(x);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    rounded = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7fc0), nan);
    // 32-bit lanes to 16: packus works within each 128-bit half, so the halves' low quarters are gathered after
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  BAKALLM_AVX2 static F add(F a, F b) { return _mm256_add_ps(a, b); }
  BAKALLM_AVX2 static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  BAKALLM_AVX2 static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  BAKALLM_AVX2 static F max(F a, F b) { return _mm256_max_ps(a, b); }
  BAKALLM_AVX2 static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  BAKALLM_AVX2 static F exp(F x) { return _ZGVdN8v_expf(x); }
  BAKALLM_AVX2 static float sum(F x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  BAKALLM_AVX2 static float most(F x) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
  }
};

// load2(P, a, b): the 2·kLanes values at P as two vectors. Float32 and int8:
// the first kLanes values, then the next. BFloat16: the even-numbered values,
// then the odd-numbered ones. Each 32-bit lane holds a pair, and a
// bfloat16's bits are a float32's upper half: the even value is the lane
// shifted up, the odd one the lane masked, with no widening shuffle. The
// float32 operand multiplied with them must then be in paired order
// (to_paired_order below). This reads bfloat16 at 1.7x the values per second
// of widening each half (AMD EPYC, AVX2, one core, from L2 cache).
struct Portable {
  using F = float;
  static constexpr int kLanes = 1;
  static constexpr int kTileRows = 4;
  static constexpr int kTileColumns = 4;
  static constexpr int kChains = 1;
  static constexpr bool kQ8Prefetched = true;
  static F zero() { return 0.0f; }
  static void held(F&) {}
  static F set1(float x) { return x; }
  static F load(const float* p) { return *p; }
  static F load(const uint16_t* p) {
    const uint32_t bits = static_cast<uint32_t>(*p) << 16;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
  static F load(const int8_t* p) { return static_cast<float>(*p); }
  template <class T>
  static void load2(const T* p, F& a, F& b) { a = load(p), b = load(p + 1); }  // pairs: already in order
  static void store(float* p, F x) { *p = x; }
  static void store(uint16_t* p, F x) { *p = bfloat16_bits(x); }
  static F add(F a, F b) { return a + b; }
  static F sub(F a, F b) { return a - b; }
  static F mul(F a, F b) { return a * b; }
  static F max(F a, F b) { return a < b ? b : a; }
  static F fmadd(F a, F b, F c) { return a * b + c; }
  static F exp(F x) { return std::exp(x); }
  static float sum(F x) { return x; }
  static float most(F x) { return x; }
};

// Asks for P's cache line (prefetcht0). Inline assembly, not _mm_prefetch:
// GCC 12's dead-code pass deleted a prefetch behind a test (the row
// attention's every other step), so that kernel prefetched nothing.
inline void prefetch_line(const void* p) { asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p))); }

// Float32 lanes per vector of ISA's set.
inline int isa_lanes(Isa isa) { return isa == Isa::kAvx512 ? Avx512::kLanes : isa == Isa::kAvx2 ? Avx2::kLanes : 1; }

// The order load2 reads bfloat16 in, for the float32 operand beside it: N
// values of X to OUT (not X), each whole chunk of 2·LANES as its even-numbered
// values, then its odd-numbered ones; a last, shorter chunk as it is.
inline void to_paired_order(const float* x, int64_t n, int lanes, float* out) {
  const int64_t whole = n / (2 * lanes) * (2 * lanes);
  for (int64_t c = 0; c < whole; c += 2 * lanes)
    for (int l = 0; l < lanes; ++l) {
      out[c + l] = x[c + 2 * l];
      out[c + lanes + l] = x[c + 2 * l + 1];
    }
  std::memcpy(out + whole, x + whole, (n - whole) * sizeof(float));
}

// The inverse: values in paired order back to their own.
inline void from_paired_order(const float* x, int64_t n, int lanes, float* out) {
  const int64_t whole = n / (2 * lanes) * (2 * lanes);
  for (int64_t c = 0; c < whole; c += 2 * lanes)
    for (int l = 0; l < lanes; ++l) {
      out[c + 2 * l] = x[c + l];
      out[c + 2 * l + 1] = x[c + lanes + l];
    }
  std::memcpy(out + whole, x + whole, (n - whole) * sizeof(float));
}

}  // namespace bakallm

// Calls EXPR (a function of the kernels' namespaces, with its arguments) in
// the copy for ISA: simd_avx512::EXPR, simd_avx2::EXPR or simd_portable::EXPR.
#define BAKALLM_ON_ISA(isa, expr)                                                         \
  ((isa) == ::bakallm::Isa::kAvx512 ? simd_avx512::expr                                   \
   : (isa) == ::bakallm::Isa::kAvx2 ? simd_avx2::expr                                     \
                                    : simd_portable::expr)
