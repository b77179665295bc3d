// CastCache and its users: a weight's bfloat16 copy is kept while the weight
// is unchanged, made again when it changes, and gradients still reach the
// float32 weight (Linear, the fused head loss).
#include <gtest/gtest.h>

#include "model/linear.h"
#include "ops/cast_cache.h"
#include "ops/cross_entropy.h"
#include "ops/matmul.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

using test::all_close;

TEST(CastCache, KeepsTheCopyWhileTheTensorIsUnchanged) {
  CastCache cache;
  auto w = torch::randn({8, 32});
  EXPECT_TRUE(cache.get(w, torch::kFloat).is_same(w));  // already in the dtype: itself
  auto first = cache.get(w, torch::kBFloat16);
  EXPECT_EQ(first.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(first, w.to(torch::kBFloat16)));
  EXPECT_TRUE(cache.get(w, torch::kBFloat16).is_same(first));  // not cast again
}

TEST(CastCache, CastsAgainAfterAnInPlaceChange) {
  CastCache cache;
  auto w = torch::randn({8, 32});
  const auto before = w.clone();
  auto first = cache.get(w, torch::kBFloat16);
  w.add_(1.0);  // an optimizer step
  auto second = cache.get(w, torch::kBFloat16);
  EXPECT_FALSE(second.is_same(first));
  EXPECT_TRUE(torch::equal(second, w.to(torch::kBFloat16)));
  EXPECT_TRUE(torch::equal(first, before.to(torch::kBFloat16)));  // the old copy untouched
}

TEST(CastCache, CastsAgainForANewTensorOrNewStorage) {
  CastCache cache;
  auto w = torch::randn({8, 32});
  auto first = cache.get(w, torch::kBFloat16);
  auto other = w.clone().mul_(2.0);
  EXPECT_TRUE(torch::equal(cache.get(other, torch::kBFloat16), other.to(torch::kBFloat16)));
  w.set_data(torch::randn({4, 32}));  // a load that replaces the data
  EXPECT_TRUE(torch::equal(cache.get(w, torch::kBFloat16), w.to(torch::kBFloat16)));
}

// A bfloat16 Linear: its products use the kept copy of the weight, the same
// values a fresh cast gives, and the weight's gradient is the float32 one.
TEST(CastCache, Bfloat16LinearFollowsItsWeightAndTrainsIt) {
  torch::manual_seed(5);
  Linear fc(64, 48);
  fc->set_compute_dtype(torch::kBFloat16);
  auto x = torch::randn({3, 10, 64});
  auto expected = [&] { return matmul_nt(x, fc->weight.detach().to(torch::kBFloat16), torch::kBFloat16); };
  EXPECT_TRUE(torch::equal(fc(x).detach(), expected()));
  {
    torch::NoGradGuard no_grad;
    fc->weight.mul_(-0.5);  // an optimizer step between two windows
  }
  EXPECT_TRUE(torch::equal(fc(x).detach(), expected()));
  auto g = torch::randn({3, 10, 48});
  (fc(x) * g).sum().backward();
  const auto xb = x.to(torch::kBFloat16).reshape({-1, 64}), gb = g.to(torch::kBFloat16).reshape({-1, 48});
  EXPECT_EQ(fc->weight.grad().scalar_type(), torch::kFloat);
  // The bfloat16 operands' product in float64 (libtorch's own bfloat16 product
  // rounds as it sums: 3% off here on an AVX2 CPU).
  const auto exact = torch::matmul(gb.t().to(torch::kDouble), xb.to(torch::kDouble)).to(torch::kFloat);
  EXPECT_TRUE(all_close(fc->weight.grad(), exact, 1e-2, 1e-2));
}

// The optimizer's in-place update moves the weight's version on: the next
// window's products use the stepped weight, not the kept copy of the old one.
TEST(CastCache, FollowsAnAdamWStep) {
  torch::manual_seed(7);
  Linear fc(64, 32);
  fc->set_compute_dtype(torch::kBFloat16);
  torch::optim::AdamW adam(fc->parameters(), torch::optim::AdamWOptions(0.1));
  auto x = torch::randn({5, 64});
  fc(x).square().sum().backward();
  adam.step();
  const auto stepped = matmul_nt(x, fc->weight.detach().to(torch::kBFloat16), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(fc(x).detach(), stepped));
}

TEST(CastCache, HeadLossWithTheKeptCastEqualsACastPerCall) {
  torch::manual_seed(6);
  auto h = torch::randn({20, 32}, torch::requires_grad()), W = torch::randn({50, 32}, torch::requires_grad());
  auto targets = torch::randint(50, {20}, torch::kLong);
  auto h2 = h.detach().clone().requires_grad_(), W2 = W.detach().clone().requires_grad_();
  CastCache cache;
  auto kept = fused_head_loss(h, W, targets, torch::kBFloat16, 8, cache.get(W, torch::kBFloat16));
  auto fresh = fused_head_loss(h2, W2, targets, torch::kBFloat16, 8);
  EXPECT_TRUE(torch::equal(kept.detach(), fresh.detach()));
  kept.backward();
  fresh.backward();
  EXPECT_TRUE(torch::equal(h.grad(), h2.grad()));
  EXPECT_TRUE(torch::equal(W.grad(), W2.grad()));
}

}  // namespace
}  // namespace bakallm
