// LayerNorm of a few rows (decoding: one row per stream) in one pass per
// row: no mean and rstd tensors, no parallel region, one allocation (the
// output). torch's layer_norm spends ~4.5 us on a 320-wide row (AMD EPYC,
// 2 threads), 25 of them a tiny token. Inference only (no autograd), CPU
// float32; the model takes it where layer_norm_rows_can says
// (model/layer_norm.h).
#pragma once
#include <torch/torch.h>

namespace bakallm {

// Σ F(d), d < D, in ACC (float or double) over 8 interleaved chains, the
// last D % 8 terms into the first: one chain of dependent adds had taken
// most of a norm's time on a decoded row (D = 320, BM_RowOps), and the
// chains are what lets the compiler's vectors sum (it may not reorder one
// chain's adds). The same order, so the same sum, for every caller.
template <class Acc, class F>
__attribute__((always_inline)) inline Acc chained_sum_at(int64_t D, F f) {
  constexpr int kChains = 8;
  Acc chain[kChains] = {0};
  int64_t d = 0;
  for (; d + kChains <= D; d += kChains)
    for (int c = 0; c < kChains; ++c) chain[c] += f(d + c);
  for (; d < D; ++d) chain[0] += f(d);
  Acc sum = 0;
  for (Acc c : chain) sum += c;
  return sum;
}

// Σ F(x[d]), d < D, the same way.
template <class Acc, class F>
__attribute__((always_inline)) inline Acc chained_sum(const float* x, int64_t D, F f) {
  return chained_sum_at<Acc>(D, [&](int64_t d) { return f(x[d]); });
}

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
