// What this CPU can run, asked once (the kernels choose their path at run time).
#pragma once

namespace bakallm {

// AVX-512 F and BW: the row products' and the softmax rows' vector kernels.
inline bool cpu_has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return yes;
}

}  // namespace bakallm
