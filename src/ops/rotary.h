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

// The tensor expression alone (any device and dtype; what the fused loop
// replaces), for tests and benchmarks. SIGN -1: the rotation back.
torch::Tensor rotate_pairs_unfused(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                   int64_t D, double sign = 1.0);

}  // namespace bakallm
