#include "ops/row_norm.h"

#include <cmath>

#include "ops/autograd.h"
#include "ops/fast_tensor.h"
#include "ops/trace.h"

namespace bakallm {

bool layer_norm_rows_can(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  auto cpu_float = [](const torch::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == torch::kFloat; };
  if (!cpu_float(x) || x.dim() < 1 || !weight.defined() || !bias.defined() || !cpu_float(weight) || !cpu_float(bias))
    return false;
  const int64_t D = x.size(-1);
  return weight.numel() == D && bias.numel() == D && D > 0 && x.numel() / D <= kRowNormRows &&
         !wants_grad(x, weight, bias);
}

torch::Tensor layer_norm_rows(const torch::Tensor& x_in, const torch::Tensor& weight, const torch::Tensor& bias,
                              double eps) {
  BAKALLM_TRACE("layer_norm_rows");
  TORCH_CHECK(layer_norm_rows_can(x_in, weight, bias),
              "layer_norm_rows: CPU float32 x [..., D] of at most ", kRowNormRows, " rows, weight and bias [D]");
  const auto x = x_in.contiguous();
  const auto w = weight.contiguous(), b = bias.contiguous();
  const int64_t D = x.size(-1), rows = x.numel() / D;
  auto y = empty_as(x);
  const float *px = x.data_ptr<float>(), *pw = w.data_ptr<float>(), *pb = b.data_ptr<float>();
  float* py = y.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = px + r * D;
    const double mean = chained_sum<double>(row, D, [](float v) { return static_cast<double>(v); }) / D;
    const double squares = chained_sum<double>(row, D, [&](float v) { return (v - mean) * (v - mean); });
    const float rstd = static_cast<float>(1.0 / std::sqrt(squares / D + eps)), m = static_cast<float>(mean);
    float* out = py + r * D;
    for (int64_t d = 0; d < D; ++d) out[d] = (row[d] - m) * rstd * pw[d] + pb[d];
  }
  return y;
}

}  // namespace bakallm
