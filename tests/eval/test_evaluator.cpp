#include <gtest/gtest.h>

#include "data/shard.h"
#include "eval/evaluator.h"
#include "paths.h"
#include "small_config.h"
#include "util/error.h"

namespace bakallm {
namespace {

Config eval_config() { return test::small_config(16, 2, 2, 32, 4, 30); }

// Direct computation: one forward over the whole document, mean next-token loss.
double direct_loss(BakaLM& model, const torch::Tensor& doc) {
  torch::NoGradGuard no_grad;
  auto ids = doc.unsqueeze(0);
  return next_token_loss(model(ids).logits, ids).item<double>();
}

TEST(Evaluator, StreamEqualsOneForwardForAnyPieceSize) {
  auto model = make_model(eval_config(), 11);
  model->eval();
  torch::manual_seed(1);
  auto doc = torch::randint(2, 30, {23}, torch::kLong);
  const double expect = direct_loss(model, doc);
  for (int64_t k : {1, 2, 5, 100}) {
    auto s = evaluate_document(model, doc, k);
    EXPECT_EQ(s.tokens, 22) << k;
    EXPECT_NEAR(s.loss(), expect, 1e-5 * expect) << k;
  }
}

TEST(Evaluator, ShardsSplitIntoDocumentsAndWeightByTokens) {
  auto model = make_model(eval_config(), 12);
  model->eval();
  test::TempDir dir;
  std::vector<uint32_t> a = {1, 5, 6, 7, 8, 9, 10, 11, 12, 13};  // 10 tokens
  std::vector<uint32_t> b = {1, 20, 21, 22};                     // 4 tokens
  std::vector<uint32_t> both = a;
  both.insert(both.end(), b.begin(), b.end());
  write_shard(dir / "s.bin", both);
  auto s = evaluate_shards(model, {dir / "s.bin"}, 1, 2);
  EXPECT_EQ(s.documents, 2);
  EXPECT_EQ(s.tokens, 9 + 3);
  auto to_tensor = [](const std::vector<uint32_t>& v) {
    return torch::tensor(std::vector<int64_t>(v.begin(), v.end()), torch::kLong);
  };
  const double expect = (9 * direct_loss(model, to_tensor(a)) + 3 * direct_loss(model, to_tensor(b))) / 12;
  EXPECT_NEAR(s.loss(), expect, 1e-5 * expect);
  EXPECT_EQ(s.nonfinite, 0);
}

TEST(Evaluator, RejectsIdsOutsideTheVocabulary) {
  auto model = make_model(eval_config(), 13);
  test::TempDir dir;
  write_shard(dir / "s.bin", {1, 2, 31});
  try {
    evaluate_shards(model, {dir / "s.bin"}, 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("token id 31 is outside"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bakallm
