#include "ops/q8.h"

#include "ops/matmul.h"
#include "ops/row_product.h"
#include "ops/trace.h"

namespace bakallm {

namespace {

// Rows at most this many go through the int8 kernel; more are dequantized
// once and multiplied by oneDNN (the weight is then read once per M rows anyway).
constexpr int64_t kKernelRows = 16;

}  // namespace

Q8Weight quantize_q8(const torch::Tensor& w_in) {
  TORCH_CHECK(w_in.dim() == 2 && w_in.size(1) % kQ8Block == 0, "quantize_q8: need [N, K] with K a multiple of 32, got ",
              w_in.sizes());
  const auto w = w_in.detach().to(torch::kFloat).contiguous();
  const int64_t N = w.size(0), K = w.size(1);
  const auto blocks = w.view({N, K / kQ8Block, kQ8Block});
  auto scales = blocks.abs().amax(-1) / 127.0;                                   // [N, K/32]
  const auto inv = torch::where(scales > 0, 1.0 / scales, torch::zeros_like(scales));
  auto q = (blocks * inv.unsqueeze(-1)).round().clamp(-127, 127).to(torch::kChar).view({N, K});
  return {q.contiguous(), scales.contiguous()};
}

torch::Tensor dequantize_q8(const Q8Weight& w, torch::ScalarType dtype) {
  const int64_t N = w.q.size(0), K = w.q.size(1);
  return (w.q.view({N, K / kQ8Block, kQ8Block}).to(torch::kFloat) * w.scales.unsqueeze(-1)).view({N, K}).to(dtype);
}

torch::Tensor matmul_nt_q8(const torch::Tensor& a_in, const Q8Weight& w, torch::ScalarType compute) {
  BAKALLM_TRACE("matmul_nt_q8");
  const int64_t N = w.q.size(0), K = w.q.size(1);
  TORCH_CHECK(a_in.size(-1) == K, "matmul_nt_q8: ", a_in.sizes(), " against a weight of ", K, " columns");
  const int64_t M = a_in.numel() / K;
  if (M > kKernelRows || !a_in.device().is_cpu()) {
    const auto y = matmul_nt(a_in, dequantize_q8(w, compute == torch::kBFloat16 ? torch::kBFloat16 : torch::kFloat), compute);
    return y.to(a_in.scalar_type());
  }
  const bool f32 = a_in.scalar_type() == torch::kFloat;  // the kernel's rows are float32
  const auto y = rows_nt(f32 ? a_in : a_in.to(torch::kFloat), w.q.data_ptr(), w.scales.data_ptr<float>(), RowWeights::kQ8, N);
  return f32 ? y : y.to(a_in.scalar_type());
}

}  // namespace bakallm
