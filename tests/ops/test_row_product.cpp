// The few-row kernel (ops/row_product.h) for each weight format, on the
// loops of each instruction set this CPU runs (AVX-512, AVX2, portable),
// against a float64 product; and
// matmul_nt's few-row products (which take the kernel) against oneDNN's.
#include <gtest/gtest.h>

#include "ops/matmul.h"
#include "ops/onednn.h"
#include "ops/q8.h"
#include "ops/row_product.h"
#include "ops/isas.h"

namespace bakallm {
namespace {

// Y = A · Wᵀ through the kernel, W given as float32 weights stored in KIND.
torch::Tensor kernel_product(const torch::Tensor& a, const torch::Tensor& w, RowWeights kind, Isa isa = kernel_isa()) {
  const int64_t M = a.size(0), K = a.size(1), N = w.size(0);
  auto y = torch::full({M, N}, std::numeric_limits<float>::quiet_NaN());
  const auto w16 = w.to(torch::kBFloat16);
  const auto q = quantize_q8(w);
  const void* wp = kind == RowWeights::kFloat ? w.data_ptr() : kind == RowWeights::kBFloat16 ? w16.data_ptr() : q.q.data_ptr();
  row_product(a.data_ptr<float>(), M, K, wp, q.scales.data_ptr<float>(), kind, y.data_ptr<float>(), N, isa);
  return y;
}

// What the kernel must compute, in float64: bfloat16 rounds both operands,
// Q8_0 multiplies by the dequantized weight.
torch::Tensor exact_product(const torch::Tensor& a, const torch::Tensor& w, RowWeights kind) {
  auto d = [](const torch::Tensor& t) { return t.to(torch::kDouble); };
  if (kind == RowWeights::kFloat) return torch::matmul(d(a), d(w).t());
  if (kind == RowWeights::kBFloat16) return torch::matmul(d(a.to(torch::kBFloat16)), d(w.to(torch::kBFloat16)).t());
  return torch::matmul(d(a), d(dequantize_q8(quantize_q8(w))).t());
}

TEST(RowProduct, EachFormatAndPathEqualsTheFloat64Product) {
  torch::manual_seed(3);
  // Columns read two or four side by side and the last few alone: fewer
  // columns than a tile, a tail, and enough for each thread a part (301).
  for (int64_t columns : {1, 3, 37, 301}) {
    const auto w = torch::randn({columns, 96});
    for (auto kind : {RowWeights::kFloat, RowWeights::kBFloat16, RowWeights::kQ8}) {
      for (Isa isa : test::isas()) {
        for (int64_t rows : {1, 2, 3, 4, 5, 7, 16}) {  // tiles of two and four rows and each remainder
          const auto a = torch::randn({rows, 96});
          const auto y = kernel_product(a, w, kind, isa);
          EXPECT_TRUE(torch::allclose(y.to(torch::kDouble), exact_product(a, w, kind), 1e-5, 1e-5))
              << "kind " << static_cast<int>(kind) << " " << isa_name(isa) << " " << rows << " rows, " << columns
              << " columns";
        }
      }
    }
  }
}

// A mutation guard: the rounding of the rows matters (without it bfloat16
// weights against float32 rows differ from the bfloat16 product).
TEST(RowProduct, Bfloat16RoundsTheRowsAsTheProductOfTwoBfloat16Operands) {
  torch::manual_seed(4);
  const auto w = torch::randn({8, 64}), a = torch::randn({1, 64});
  const auto y = kernel_product(a, w, RowWeights::kBFloat16).to(torch::kDouble);
  const auto unrounded = torch::matmul(a.to(torch::kDouble), w.to(torch::kBFloat16).to(torch::kDouble).t());
  EXPECT_TRUE(torch::allclose(y, exact_product(a, w, RowWeights::kBFloat16), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(y, unrounded, 1e-6, 1e-6));
}

// matmul_nt sends few rows to the kernel: the same as oneDNN's product
// (float32 up to 16 rows, bfloat16 up to 4; bfloat16 where oneDNN has it,
// and the float64 product of the bfloat16 operands everywhere), batch dims kept.
TEST(RowProduct, MatmulNtOfFewRowsEqualsOneDNN) {
  if (!onednn_enabled()) GTEST_SKIP() << "no oneDNN in this build";
  torch::manual_seed(5);
  const auto w = torch::randn({70, 320}) * 0.1, w16 = w.to(torch::kBFloat16);
  for (int64_t rows : {1, 4, 16}) {
    const auto x = torch::randn({rows, 1, 320});
    const auto y = matmul_nt(x, w);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{rows, 1, 70}));
    EXPECT_TRUE(torch::allclose(y, onednn::matmul(x.view({rows, 320}), w.t(), torch::kFloat).view({rows, 1, 70}), 1e-5, 1e-5));
    const auto y16 = matmul_nt(x, w16, torch::kBFloat16);
    EXPECT_EQ(y16.scalar_type(), torch::kFloat);
    if (onednn::supports(torch::kBFloat16)) {
      const auto want16 = onednn::matmul(x.view({rows, 320}).to(torch::kBFloat16), w16.t(), torch::kFloat);
      EXPECT_TRUE(torch::allclose(y16, want16.view({rows, 1, 70}), 1e-5, 1e-5)) << rows << " rows";
    }
    // On any CPU: the float64 product of the two bfloat16 operands.
    const auto exact16 = torch::matmul(x.to(torch::kBFloat16).to(torch::kDouble), w16.to(torch::kDouble).t());
    EXPECT_TRUE(torch::allclose(y16.to(torch::kDouble), exact16, 1e-5, 1e-5)) << rows << " rows";
  }
}

}  // namespace
}  // namespace bakallm
