// The rows' LayerNorm (ops/row_norm.h) against LayerNorm written out in
// float64: one row and the most rows it takes, widths with odd tails, rows
// far from zero mean; when it declines (a gradient wanted, too many rows,
// bfloat16); and the model's LayerNorm (model/layer_norm.h), which takes it
// at inference and torch's layer_norm, with gradients, in training.
#include <gtest/gtest.h>

#include "model/layer_norm.h"
#include "ops/row_norm.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

torch::Tensor reference(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b, double eps) {
  const auto d = x.to(torch::kDouble);
  const auto mean = d.mean(-1, true), var = (d - mean).pow(2).mean(-1, true);
  return (d - mean) / (var + eps).sqrt() * w.to(torch::kDouble) + b.to(torch::kDouble);
}

TEST(RowNorm, EqualsLayerNormInFloat64) {
  torch::manual_seed(21);
  torch::NoGradGuard no_grad;
  for (int64_t D : {1, 7, 320, 333})
    for (int64_t rows : {int64_t{1}, int64_t{3}, kRowNormRows}) {
      const auto x = torch::randn({1, rows, D}) * 3 + 50;  // a large mean: a one-pass variance would lose it
      const auto w = torch::randn({D}), b = torch::randn({D});
      ASSERT_TRUE(layer_norm_rows_can(x, w, b));
      const auto y = layer_norm_rows(x, w, b, 1e-5);
      EXPECT_EQ(y.sizes(), x.sizes());
      EXPECT_TRUE(test::all_close(y, reference(x, w, b, 1e-5), 1e-5, 1e-5)) << rows << " rows of " << D;
    }
}

TEST(RowNorm, DeclinesWhatItDoesNotTake) {
  torch::NoGradGuard no_grad;
  const auto w = torch::ones({8}), b = torch::zeros({8});
  EXPECT_FALSE(layer_norm_rows_can(torch::randn({kRowNormRows + 1, 8}), w, b));
  EXPECT_FALSE(layer_norm_rows_can(torch::randn({1, 8}).to(torch::kBFloat16), w, b));
  EXPECT_FALSE(layer_norm_rows_can(torch::randn({1, 8}), torch::ones({9}), b));
  EXPECT_FALSE(layer_norm_rows_can(torch::randn({1, 8}), w, torch::Tensor()));
  EXPECT_THROW(layer_norm_rows(torch::randn({kRowNormRows + 1, 8}), w, b, 1e-5), c10::Error);
  torch::AutoGradMode grad(true);
  EXPECT_FALSE(layer_norm_rows_can(torch::randn({1, 8}), w.clone().requires_grad_(), b));
}

TEST(RowNorm, TheModelsLayerNormTakesItOnlyAtInference) {
  torch::manual_seed(22);
  auto norm = layer_norm(40);
  {
    torch::NoGradGuard no_grad;
    norm->weight.normal_();
    norm->bias.normal_();
  }
  const auto x = torch::randn({2, 1, 40});
  const auto expected = reference(x, norm->weight, norm->bias, 1e-5);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(test::all_close(norm(x), expected, 1e-5, 1e-5));
  }
  // Training: torch's kernel, and the weight's gradient reaches it.
  const auto y = norm(x);
  EXPECT_TRUE(y.requires_grad());
  EXPECT_TRUE(test::all_close(y.detach(), expected, 1e-5, 1e-5));
  y.sum().backward();
  EXPECT_TRUE(norm->bias.grad().defined());
  EXPECT_TRUE(test::all_close(norm->bias.grad(), torch::full({40}, 2.0), 1e-6, 1e-6));
}

}  // namespace
}  // namespace bakallm
