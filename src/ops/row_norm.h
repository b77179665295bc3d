// LayerNorm of a few rows (decoding: one row per stream) in one pass per
// row: no mean and rstd tensors, no parallel region, one allocation (the
// output). torch's layer_norm spends ~4.5 us on a 320-wide row (AMD EPYC,
// 2 threads), 25 of them a tiny token. Inference only (no autograd), CPU
// float32; the model takes it where layer_norm_rows_can says
// (model/layer_norm.h).
#pragma once
#include <torch/torch.h>

namespace bakallm {

// Rows this op takes at most: beyond them torch's kernel, threaded, is as quick.
constexpr int64_t kRowNormRows = 16;

// Whether layer_norm_rows takes x [..., D] with WEIGHT and BIAS [D]: CPU
// float32, at most kRowNormRows rows, no gradient wanted.
bool layer_norm_rows_can(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// (x − mean) / sqrt(var + eps) · weight + bias over the last dimension, the
// moments summed in float64.                                        [..., D]
torch::Tensor layer_norm_rows(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                              double eps);

}  // namespace bakallm
