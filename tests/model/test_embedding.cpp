// The input embedding's own lookup of a few ids at inference (model/embedding.h)
// equals libtorch's; elsewhere it is libtorch's, gradient and all.
#include <gtest/gtest.h>

#include "model/embedding.h"

namespace bakallm {
namespace {

TEST(Embedding, FewIdsAtInferenceAreLibtorchsRows) {
  Embedding e(50, 12);
  const auto ids = torch::tensor({3, 0, 49, 3}, torch::kLong).view({2, 2});
  const auto want = torch::embedding(e->weight.detach(), ids);
  c10::InferenceMode inference;
  const auto got = e(ids);
  EXPECT_EQ(got.sizes(), (std::vector<int64_t>{2, 2, 12}));
  EXPECT_TRUE(torch::equal(got, want));
  EXPECT_TRUE(torch::equal(e(torch::tensor({7}, torch::kLong)), torch::embedding(e->weight, torch::tensor({7}, torch::kLong))));
  EXPECT_THROW(e(torch::tensor({50}, torch::kLong)), c10::IndexError);
  EXPECT_THROW(e(torch::tensor({-1}, torch::kLong)), c10::IndexError);
  const auto many = torch::randint(0, 50, {3, 7}, torch::kLong);  // more than a few: libtorch's lookup
  EXPECT_TRUE(torch::equal(e(many), torch::embedding(e->weight, many)));
}

TEST(Embedding, TrainingKeepsTheGraph) {
  Embedding e(10, 4);
  e(torch::tensor({2, 2, 5}, torch::kLong)).sum().backward();
  const auto g = e->weight.grad();
  EXPECT_TRUE(torch::equal(g.sum(1), torch::tensor({0.0f, 0.0f, 8.0f, 0.0f, 0.0f, 4.0f, 0.0f, 0.0f, 0.0f, 0.0f})));
}

}  // namespace
}  // namespace bakallm
