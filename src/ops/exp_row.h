// One row's softmax numerator in place, the vector loop the head loss and
// the row attention share.
#pragma once
#include <cstdint>
#include <utility>

namespace bakallm {

// X: N floats. Its max m, then x := exp(x − m) in place; returns {m, Σ x}.
// One pass for the max, one for exp and sum while the row is in cache:
// ops/avx512.h's exp16 (within 1 ulp) on AVX-512, glibc's vector expf
// (libmvec, within 4 ulp) on AVX2, std::exp in portable C++ (ops/simd.h;
// kernel_isa() chooses). A row of -inf only gives m = -inf and NaNs, as
// softmax would.
std::pair<float, float> exp_row_(float* x, int64_t n);

}  // namespace bakallm
