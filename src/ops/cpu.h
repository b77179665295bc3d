// What this CPU can run, asked once (the kernels choose their path at run time).
#pragma once

namespace bakallm {

// AVX-512 F and BW: the gates', norms' and loss's vector kernels.
inline bool cpu_has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return yes;
}

// AMX's tiles with their bfloat16 product (whether Linux lets a process use
// them is asked apart: amx_tiles_available, ops/compute_limit.h).
inline bool cpu_has_amx_bf16() {
  static const bool yes = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16");
  return yes;
}

// The instruction sets the decoding kernels (row products, row attention,
// softmax rows) are written for, slowest first: one source each (ops/simd.h).
enum class Isa { kPortable, kAvx2, kAvx512 };

// The best this CPU runs: AVX-512 F and BW, else AVX2 with FMA (AMD's Zen 1
// to 3, Intel before Skylake-SP), else portable C++.
inline Isa cpu_isa() {
  static const Isa best = cpu_has_avx512()                                                          ? Isa::kAvx512
                          : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? Isa::kAvx2
                                                                                                    : Isa::kPortable;
  return best;
}

// An AMD core: there the row product's int8 weights read faster without
// software prefetches, with AVX2 (Zen2) and AVX-512 (Zen5) alike
// (row_product_loops.inc); on the AVX-512 Xeon, twice as fast with them.
inline bool cpu_is_amd() {
  static const bool yes = __builtin_cpu_is("amd");
  return yes;
}

inline const char* isa_name(Isa isa) {
  return isa == Isa::kAvx512 ? "avx512" : isa == Isa::kAvx2 ? "avx2" : "portable";
}

// What those kernels run: cpu_isa(), or a slower set where the environment's
// BAKALLM_ISA (avx512, avx2 or portable) or set_kernel_isa asks for one.
// Loops left to the compiler and built a second time for AVX-512 (the EMA
// scan, the negated norm) take that build where this says kAvx512.
Isa kernel_isa();

// For tests and comparisons: run ISA's loops from now on (at most cpu_isa()).
void set_kernel_isa(Isa isa);

}  // namespace bakallm
