// Tensors in memory advised for huge pages: shapes, values and identities
// kept, the region alive while any tensor on it is, and a model's stored
// weights moved without changing what it computes.
#include <gtest/gtest.h>

#include "model/baka_lm.h"
#include "small_config.h"
#include "util/huge_pages.h"

namespace bakallm {
namespace {

uintptr_t address(const torch::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()); }

TEST(HugePages, EmptyHugeIsAlignedWhenLargeAndOrdinaryWhenSmall) {
  auto big = empty_huge({3, kHugePageBytes / 4}, torch::kFloat);  // 6 MB
  EXPECT_EQ(big.sizes(), (std::vector<int64_t>{3, kHugePageBytes / 4}));
  EXPECT_EQ(big.scalar_type(), torch::kFloat);
  EXPECT_EQ(address(big) % kHugePageBytes, 0u);
  big.fill_(2.5);  // writable, every page
  EXPECT_EQ(big.sum().item<double>(), 2.5 * big.numel());
  auto small = empty_huge({16, 16}, torch::kBFloat16);
  EXPECT_EQ(small.sizes(), (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(small.scalar_type(), torch::kBFloat16);
}

TEST(HugePages, MovedTensorsKeepValuesIdentityAndGrad) {
  auto weight = torch::randn({300, 700}, torch::requires_grad());
  auto bits = torch::randn({5, 64}).to(torch::kBFloat16);
  auto codes = torch::randint(-128, 127, {77, 32}, torch::kChar);
  const auto w0 = weight.detach().clone(), b0 = bits.clone(), c0 = codes.clone();
  const auto* impl = weight.unsafeGetTensorImpl();
  move_to_huge_pages({&weight, &bits, &codes});
  EXPECT_EQ(weight.unsafeGetTensorImpl(), impl);  // the same parameter, new storage
  EXPECT_TRUE(weight.requires_grad());
  EXPECT_TRUE(torch::equal(weight.detach(), w0));
  EXPECT_TRUE(torch::equal(bits, b0));
  EXPECT_TRUE(torch::equal(codes, c0));
  EXPECT_EQ(address(weight) % kHugePageBytes, 0u);  // the region's start
  EXPECT_EQ(address(bits) % 64, 0u);                // each on its own cache line
  EXPECT_EQ(address(codes) % 64, 0u);
  EXPECT_EQ(address(bits), address(weight) + 300 * 700 * 4);
}

TEST(HugePages, TheRegionLivesWhileAnyTensorOnItDoes) {
  auto a = torch::full({1000}, 1.5), b = torch::full({1000}, -2.0);
  move_to_huge_pages({&a, &b});
  a = torch::Tensor();  // the first tensor goes; the region stays for b
  auto noise = torch::full({1 << 20}, 7.0);  // memory reused elsewhere meanwhile
  EXPECT_TRUE(torch::equal(b, torch::full({1000}, -2.0)));
}

// generate, eval and serve store the products' weights in huge pages, float32
// included: the model computes exactly what it did.
TEST(HugePages, StoredFloatWeightsComputeTheSame) {
  auto model = make_model(test::small_config(32, 2, 2, 64, 8, 48), 4);
  model->eval();
  torch::NoGradGuard no_grad;
  const auto ids = torch::randint(3, 48, {2, 19});
  const auto before = model->forward(ids, State{}).logits;
  const auto* head = model->embed_out->weight.unsafeGetTensorImpl();
  const auto old_address = address(model->embed_out->weight);
  use_weights(model, "float32");
  EXPECT_EQ(model->embed_out->weight.unsafeGetTensorImpl(), head);
  EXPECT_NE(address(model->embed_out->weight), old_address);  // moved
  EXPECT_EQ(model->embed_out->weight.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(model->forward(ids, State{}).logits, before));
}

}  // namespace
}  // namespace bakallm
