#include "ops/exp_row.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ops/simd.h"

namespace bakallm {

namespace {

#define BAKALLM_SIMD_LOOPS "ops/exp_row_loops.inc"
#include "ops/simd_targets.inc"

}  // namespace

std::pair<float, float> exp_row_(float* x, int64_t n) { return BAKALLM_ON_ISA(kernel_isa(), exp_row(x, n)); }

}  // namespace bakallm
