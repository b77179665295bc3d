// Parity with ../shared/golden: an independent implementation of the spec,
// checked against the author's prototype. 1e-5 relative / 1e-6 absolute.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/model_dir.h"
#include "io/safetensors.h"
#include "model/baka_lm.h"
#include "device.h"
#include "paths.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

using test::all_close;

class GoldenParity : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(test::golden("tiny.safetensors")))
      GTEST_SKIP() << "needs ../shared/golden (tiny.safetensors) beside the checkout";
    config = load_config(test::golden("tiny.config.json"));
    model = BakaLM(config);
    load_weights(model, read_safetensors(test::golden("tiny.safetensors")).tensors, "tiny.safetensors");
    model->to(test::device());
    cases = read_safetensors(test::golden("tiny.cases.safetensors")).tensors;
    ids = cases.at("ids").to(test::device());
  }
  Config config;
  BakaLM model{nullptr};
  std::map<std::string, torch::Tensor> cases;
  torch::Tensor ids;
};

TEST_F(GoldenParity, LogitsAndLoss) {
  model->eval();
  torch::NoGradGuard no_grad;
  auto out = model(ids);
  EXPECT_TRUE(all_close(out.logits, cases.at("logits")));
  EXPECT_TRUE(all_close(next_token_loss(out.logits, ids).reshape({1}), cases.at("loss")));
  EXPECT_EQ(out.state.seen, ids.size(1));
  EXPECT_EQ(out.state.windows, 4);
}

TEST_F(GoldenParity, StreamingInTwoCalls) {
  model->eval();
  torch::NoGradGuard no_grad;
  auto first = model(ids.narrow(1, 0, 16));
  EXPECT_TRUE(all_close(first.logits, cases.at("stream.logits_0_16")));
  EXPECT_TRUE(all_close(first.state.memory, cases.at("stream.memory_after_16")));
  auto second = model(ids.narrow(1, 16, 13), first.state);
  EXPECT_TRUE(all_close(second.logits, cases.at("stream.logits_16_29")));
}

TEST_F(GoldenParity, GradientOfEveryParameter) {
  model->train();
  auto out = model(ids);
  next_token_loss(out.logits, ids).backward();
  int checked = 0;
  for (const auto& p : model->named_parameters()) {
    auto it = cases.find("grad." + p.key());
    if (it == cases.end()) {
      // Only the solidifier's unused past-key/value gates get no gradient.
      EXPECT_TRUE(!p.value().grad().defined() || p.value().grad().abs().max().item<float>() == 0)
          << p.key() << " has a gradient the golden file lacks";
      continue;
    }
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(all_close(p.value().grad(), it->second)) << p.key();
    ++checked;
  }
  EXPECT_EQ(checked, 76);
}

TEST_F(GoldenParity, ParameterNamesAreTheSpecs) {
  auto golden = read_safetensors(test::golden("tiny.safetensors")).tensors;
  std::set<std::string> ours;
  for (const auto& [name, t] : model_tensors(model)) ours.insert(name);
  std::set<std::string> theirs;
  for (const auto& [name, t] : golden) theirs.insert(name);
  EXPECT_EQ(ours, theirs);
}

}  // namespace
}  // namespace bakallm

namespace bakallm {
namespace {

// The fused head + loss used in training gives the golden loss and gradients too.
TEST_F(GoldenParity, FusedLossGradients) {
  model->train();
  auto out = model->forward_loss(ids, shifted_targets(ids));
  EXPECT_TRUE(test::all_close(out.loss.reshape({1}), cases.at("loss")));
  out.loss.backward();
  for (const auto& p : model->named_parameters()) {
    auto it = cases.find("grad." + p.key());
    if (it != cases.end()) {
      EXPECT_TRUE(test::all_close(p.value().grad(), it->second)) << p.key();
    }
  }
}

}  // namespace
}  // namespace bakallm
