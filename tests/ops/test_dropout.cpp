// The hashed dropout: its drop rate, exact scaling, the mask the backward
// regenerates, and determinism under libtorch's seed.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <vector>

#include "ops/dropout.h"
#include "isas.h"

namespace bakallm {
namespace {

TEST(Dropout, RateScaleAndMaskFunction) {
  torch::manual_seed(0);
  const double p = 0.1;
  auto x = torch::rand({1000, 1003}) + 0.5;  // no zeros of its own
  auto y = hashed_dropout(x, p, /*training=*/true);
  auto kept = y.ne(0);
  const double dropped = 1.0 - kept.to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(dropped, p, 0.002);
  EXPECT_TRUE(torch::equal(y.masked_select(kept), (x * static_cast<float>(1.0 / (1.0 - p))).masked_select(kept)));
  // Rows are not correlated with each other: each row's rate is near p too.
  auto row_rate = 1.0 - kept.to(torch::kDouble).mean(1);
  EXPECT_LT(row_rate.max().item<double>(), 0.15);
  EXPECT_GT(row_rate.min().item<double>(), 0.05);
}

TEST(Dropout, GradientUsesTheSameMask) {
  torch::manual_seed(1);
  auto x = (torch::rand({37, 41}) + 0.5).requires_grad_();
  auto y = hashed_dropout(x, 0.3, true);
  auto g = torch::randn({37, 41});
  (y * g).sum().backward();
  auto expect = torch::where(y.ne(0), g / 0.7, torch::zeros_like(g));
  EXPECT_TRUE(torch::allclose(x.grad(), expect, 1e-6, 1e-6));
}

TEST(Dropout, MaskIsAFunctionOfTheSeed) {
  torch::manual_seed(2);
  auto x = torch::ones({3, 50});
  auto a = hashed_dropout(x, 0.5, true);
  torch::manual_seed(2);
  auto b = hashed_dropout(x, 0.5, true);
  auto c = hashed_dropout(x, 0.5, true);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_FALSE(torch::equal(b, c));
  // The same seed that dropout drew: dropout_keeps states each decision.
  torch::manual_seed(2);
  const auto seed = at::check_generator<at::CPUGeneratorImpl>(at::detail::getDefaultCPUGenerator())->random64();
  for (int64_t i = 0; i < x.numel(); ++i)
    EXPECT_EQ(dropout_keeps(seed, i, 0.5), a.view({-1})[i].item<float>() != 0.0f) << i;
}

TEST(Dropout, MultipliersAreTheDecisionsFromAnyFirstElement) {
  // Rows of a fused kernel's dropout start anywhere in a hash's four elements
  // and end anywhere in a vector step (AVX-512: 32 a step), in each set's path.
  const uint64_t seed = 0x1234567890abcdefull;
  for (Isa isa : test::isas()) {
    test::KernelIsa on(isa);
    for (double p : {0.1, 0.5}) {
      const float scale = static_cast<float>(1.0 / (1.0 - p));
      for (int64_t first : {0, 1, 2, 3, 4, 29, 1000003})
        for (int64_t n : {1, 3, 31, 32, 33, 64, 100}) {
          std::vector<float> got(n + 1, -1.0f);
          dropout_multipliers(seed, p, first, n, got.data());
          for (int64_t c = 0; c < n; ++c)
            ASSERT_EQ(got[c], dropout_keeps(seed, first + c, p) ? scale : 0.0f)
                << isa_name(isa) << " first " << first << " n " << n << " c " << c;
          ASSERT_EQ(got[n], -1.0f) << "wrote past the row";
        }
    }
  }
}

TEST(Dropout, IdentityWhenOffOrEvaluating) {
  auto x = torch::randn({4, 5});
  EXPECT_TRUE(hashed_dropout(x, 0.0, true).is_same(x));
  EXPECT_TRUE(hashed_dropout(x, 0.5, false).is_same(x));
}

}  // namespace
}  // namespace bakallm
