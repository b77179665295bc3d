// The rotary embedding's rotation as one pass: for x [N, T, F], the first D
// features rotated in interleaved pairs by the angles whose cos and sin are
// given, the other F - D features copied:
//   y[2j]   = x[2j]·cos_j − x[2j+1]·sin_j
//   y[2j+1] = x[2j+1]·cos_j + x[2j]·sin_j
// Backward: the rotation by −angle (cos and sin are constants: positions).
// CPU float32 runs a loop over rows (one op where the tensor expression is a
// dozen: narrow, unflatten, four products, two sums, stack, flatten, cat);
// other devices and dtypes run that expression.
#pragma once
#include <torch/torch.h>

namespace bakallm {

// x [N, T, F]; cos, sin [T, D/2] (every row alike) or [N, T, D/2]; D <= F, even.  -> [N, T, F]
torch::Tensor rotate_pairs(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, int64_t D);

// One row of the loop: y[2j], y[2j+1] = x[2j], x[2j+1] rotated by the angle
// whose cos and sin are c[j], s[j] (SIGN -1: the rotation back), j < HALF.
// Y may be X. For kernels that rotate as they compute (ops/negated_norm.h).
inline void rotate_row(const float* x, const float* c, const float* s, float sign, int64_t half, float* y) {
  for (int64_t j = 0; j < half; ++j) {
    const float even = x[2 * j], odd = x[2 * j + 1], sj = sign * s[j];
    y[2 * j] = even * c[j] - odd * sj;
    y[2 * j + 1] = odd * c[j] + even * sj;
  }
}

// The tensor expression alone (any device and dtype; what the fused loop
// replaces), for tests and benchmarks. SIGN -1: the rotation back.
torch::Tensor rotate_pairs_unfused(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                   int64_t D, double sign = 1.0);

}  // namespace bakallm
