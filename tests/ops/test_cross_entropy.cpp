// fused_head_loss against libtorch's own logits + cross_entropy: value and
// gradients, chunked, with ignored targets and a non-unit upstream gradient.
#include <gtest/gtest.h>

#include "ops/cross_entropy.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

using test::all_close;

// The row kernel (max, exp in place, sum) against the tensor ops, with a row
// length that leaves a tail past the 16-lane vectors and values far apart.
TEST(ExpRows, EqualsMaxExpSum) {
  torch::manual_seed(11);
  for (int64_t V : {1, 15, 16, 33, 32000}) {
    auto x = torch::randn({5, V}) * 20;
    x[1].fill_(-3.0);  // every value equal
    auto expect = x.clone();
    auto m_want = std::get<0>(expect.max(1, true));
    expect.sub_(m_want).exp_();
    auto [m, sum] = exp_rows_(x);
    EXPECT_TRUE(torch::equal(m, m_want)) << V;
    EXPECT_TRUE(torch::allclose(x, expect, 1e-6, 1e-30)) << V;
    EXPECT_TRUE(torch::allclose(sum, expect.to(torch::kDouble).sum(1, true).to(torch::kFloat), 1e-6, 0)) << V;
  }
}

// The head's gradient rows against the tensor ops they replace (max, sub_,
// exp_, mul_, scatter_add_, a cast): the same float32 values, rounded once to
// bfloat16; rows of weight 0 (ignored targets) give zeros; a row length with
// a tail past the 16-lane vectors; a target outside the row is refused.
TEST(SoftmaxGradient, EqualsExpScaleScatterAndCast) {
  torch::manual_seed(12);
  for (int64_t V : {5, 101, 32000})
    for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
      SCOPED_TRACE("V " + std::to_string(V) + (dtype == torch::kFloat ? " float32" : " bfloat16"));
      auto x = torch::randn({7, V}) * 3;
      const auto index = torch::randint(V, {7, 1}, torch::kLong);
      auto w = torch::rand({7, 1}) / 7;
      w[2] = 0;  // an ignored row
      const auto m_want = std::get<0>(x.max(1, true));
      auto expect = (x - m_want).exp();
      const auto sum_want = expect.to(torch::kDouble).sum(1, true).to(torch::kFloat);
      expect.mul_(w / expect.sum(1, true));
      expect.scatter_add_(1, index, -w);
      auto [m, sum, got] = softmax_gradient_(x, w, index, dtype);
      EXPECT_TRUE(torch::equal(m, m_want));
      EXPECT_TRUE(torch::allclose(sum, sum_want, 1e-6, 0));
      EXPECT_EQ(got.scalar_type(), dtype);
      // within exp's 4 ulp and the sum's rounding: 1e-6 relative, each value
      // rounded to bfloat16 once (an off-by-one rounding at most)
      EXPECT_TRUE(torch::allclose(got.to(torch::kFloat), expect.to(dtype).to(torch::kFloat),
                                  dtype == torch::kFloat ? 1e-5 : 1.0 / 128, 1e-12));
      EXPECT_EQ(got[2].abs().sum().item<float>(), 0.0f);
    }
  auto x = torch::rand({2, 8});
  EXPECT_THROW(softmax_gradient_(x, torch::ones({2, 1}), torch::full({2, 1}, 8, torch::kLong), torch::kFloat),
               c10::Error);
}

TEST(FusedHeadLoss, MatchesCrossEntropyChunkedWithIgnoredRows) {
  torch::manual_seed(0);
  const int64_t N = 37, D = 24, V = 101;
  auto h = torch::randn({N, D}, torch::requires_grad());
  auto W = torch::randn({V, D}, torch::requires_grad());
  auto targets = torch::randint(V, {N}, torch::kLong);
  targets.narrow(0, 3, 5).fill_(kIgnoreIndex);
  auto h2 = h.detach().clone().requires_grad_(), W2 = W.detach().clone().requires_grad_();

  auto loss = fused_head_loss(h, W, targets, torch::kFloat, /*rows_per_chunk=*/10);
  auto ref = torch::nn::functional::cross_entropy(
      torch::matmul(h2, W2.t()), targets, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(kIgnoreIndex));
  EXPECT_TRUE(all_close(loss, ref, 1e-5, 1e-6));
  (2.5 * loss).backward();
  (2.5 * ref).backward();
  EXPECT_TRUE(all_close(h.grad(), h2.grad(), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(W.grad(), W2.grad(), 1e-5, 1e-6));
}

TEST(FusedHeadLoss, NoGradModeGivesTheSameValue) {
  torch::manual_seed(1);
  auto h = torch::randn({9, 8}), W = torch::randn({13, 8}, torch::requires_grad());
  auto targets = torch::randint(13, {9}, torch::kLong);
  auto with_graph = fused_head_loss(h, W, targets, torch::kFloat, 4);
  torch::NoGradGuard no_grad;
  auto without = fused_head_loss(h, W, targets, torch::kFloat, 4);
  EXPECT_FALSE(without.requires_grad());
  EXPECT_TRUE(all_close(with_graph.detach(), without, 1e-6, 1e-7));
}

TEST(FusedHeadLoss, AllTargetsIgnoredIsZeroWithZeroGradients) {
  auto h = torch::randn({4, 8}, torch::requires_grad()), W = torch::randn({13, 8}, torch::requires_grad());
  auto loss = fused_head_loss(h, W, torch::full({4}, kIgnoreIndex, torch::kLong));
  EXPECT_EQ(loss.item<float>(), 0.0f);
  loss.backward();
  EXPECT_EQ(h.grad().abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(W.grad().abs().sum().item<float>(), 0.0f);
}

}  // namespace
}  // namespace bakallm
