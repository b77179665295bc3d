// The GPT-NeoX baseline against a plain-PyTorch GPT-NeoX written from Hugging
// Face's modeling code (tests/fixtures/make_neox_fixture.py): a checkpoint
// directory as Hugging Face ships one loads, and its logits, loss and every
// gradient agree at 1e-5; the config reads Hugging Face's fields; the decoder
// equals the batched forward.
#include <gtest/gtest.h>

#include <fstream>

#include "infer/decoder.h"
#include "io/model_dir.h"
#include "io/safetensors.h"
#include "model/baka_lm.h"
#include "model/flops.h"
#include "util/error.h"
#include "device.h"
#include "paths.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

using test::all_close;

class NeoxParity : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    loaded = load_model_dir(test::fixture(GetParam()), Runtime{test::device(), torch::kFloat});
    cases = read_safetensors(test::fixture(std::string(GetParam()) + ".expected.safetensors")).tensors;
    ids = cases.at("ids").to(test::device());
  }
  LoadedModel loaded;
  std::map<std::string, torch::Tensor> cases;
  torch::Tensor ids;
};

TEST_P(NeoxParity, ConfigReadsHuggingFaceFields) {
  const auto& c = loaded.config;
  EXPECT_TRUE(c.is_gpt_neox());
  EXPECT_EQ(c.hidden_dim, 32);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.intermediate_dim, 64);
  EXPECT_EQ(c.vocab_size, 97);
  EXPECT_EQ(c.window_size, 64);  // max_position_embeddings when window_size is absent
  EXPECT_DOUBLE_EQ(c.rotary_pct, 0.5);
  EXPECT_EQ(c.use_parallel_residual, std::string(GetParam()) == "neox_parallel");
}

TEST_P(NeoxParity, LogitsAndLoss) {
  torch::NoGradGuard no_grad;
  auto out = loaded.model(ids);
  EXPECT_TRUE(all_close(out.logits, cases.at("logits")));
  EXPECT_TRUE(all_close(next_token_loss(out.logits, ids).reshape({1}), cases.at("loss")));
  EXPECT_EQ(out.state.seen, 0);  // no state
}

TEST_P(NeoxParity, FusedLossAndEveryGradient) {
  auto& model = loaded.model;
  model->train();  // dropout is 0 in the fixture
  auto out = model->forward_loss(ids, shifted_targets(ids));
  EXPECT_TRUE(all_close(out.loss.reshape({1}), cases.at("loss")));
  out.loss.backward();
  int checked = 0;
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(cases.count("grad." + p.key())) << p.key() << " is not a Hugging Face parameter name";
    EXPECT_TRUE(all_close(p.value().grad(), cases.at("grad." + p.key()))) << p.key();
    ++checked;
  }
  EXPECT_EQ(checked, 1 + 2 * 12 + 2 + 1);  // embed_in; 12 per layer; final norm; embed_out
}

TEST_P(NeoxParity, DecoderEqualsForwardAcrossWindows) {
  Config c = loaded.config;
  c.window_size = 7;  // 24 tokens: windows of 7, 7, 7, 3, each read alone
  BakaLM model(c);
  load_weights(model, read_safetensors(test::fixture(std::string(GetParam()) + "/model.safetensors")).tensors,
               "fixture");
  model->to(test::device());
  model->eval();
  torch::NoGradGuard no_grad;
  auto full = model(ids).logits;  // [B, T, V]
  Decoder decoder(model, ids.size(0));
  for (int64_t t = 0; t < ids.size(1);) {
    const int64_t n = t < 10 ? 1 : 5;  // one at a time, then in pieces that straddle windows
    const int64_t take = std::min(n, ids.size(1) - t);
    auto logits = decoder.feed(ids.narrow(1, t, take));
    t += take;
    EXPECT_TRUE(all_close(logits, full.select(1, t - 1))) << "after token " << t;
  }
  EXPECT_EQ(decoder.tokens(), ids.size(1));
  // Windows are read alone: the 8th token's logits do not depend on the first 7.
  auto later = model(ids.narrow(1, 7, 7)).logits;
  EXPECT_TRUE(all_close(later, full.narrow(1, 7, 7)));
}

INSTANTIATE_TEST_SUITE_P(Residuals, NeoxParity, ::testing::Values("neox_parallel", "neox_sequential"));

nlohmann::json fixture_config() {
  std::ifstream in(test::fixture("neox_parallel/config.json"));
  return nlohmann::json::parse(in);
}

TEST(NeoxConfig, RefusesWhatItDoesNotImplement) {
  auto expect_refused = [](nlohmann::json j, const std::string& words) {
    try {
      config_from_json(j, "config.json");
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  auto j = fixture_config();
  j["tie_word_embeddings"] = true;
  expect_refused(j, "tie_word_embeddings");
  j = fixture_config();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_refused(j, "rope_scaling");
  j = fixture_config();
  j["num_memory_tokens"] = 4;  // a BakaLLM field
  expect_refused(j, "unknown field 'num_memory_tokens'");
  j = fixture_config();
  j["num_attention_heads"] = 5;
  expect_refused(j, "num_attention_heads");
  j = fixture_config();
  j["rotary_pct"] = 0.3;  // 8 · 0.3 = 2.4 -> 2 features: even, allowed
  EXPECT_NO_THROW(config_from_json(j, "config.json"));
  j["rotary_pct"] = 0.15;  // 8 · 0.15 -> 1 feature: no pair
  expect_refused(j, "rotary_pct");
  j = fixture_config();
  j["hidden_act"] = "gelu_new";
  expect_refused(j, "hidden_act");
  j = fixture_config();
  j.erase("hidden_size");
  expect_refused(j, "missing field 'hidden_size'");
}

TEST(NeoxConfig, WritesBackWhatItRead) {
  auto c = config_from_json(fixture_config(), "config.json");
  auto j = config_to_json(c);
  EXPECT_EQ(j.at("model_type"), "gpt_neox");
  EXPECT_EQ(j.at("architectures"), nlohmann::json::array({"GPTNeoXForCausalLM"}));
  auto again = config_from_json(j, "again");
  EXPECT_EQ(config_to_json(again), j);
}

TEST(NeoxConfig, Pythia14mPresetHasPythiasParameterCount) {
  const Config c = preset("pythia-14m");
  BakaLM model(c);
  // EleutherAI/pythia-14m: 14,067,712 parameters (embed_in and embed_out 6,438,912 each).
  EXPECT_EQ(parameter_groups(model).back().second, 14067712);
  EXPECT_NEAR(c.parameter_estimate(), 14067712, 1.0);
  EXPECT_EQ(c.window_size, 2048);
}

TEST(NeoxInit, HuggingFaceInitialisation) {
  const Config c = config_from_json(fixture_config(), "config.json");
  torch::manual_seed(3);
  BakaLM model(c);
  auto& qkv = model->gpt_neox->layers->at<GptNeoxLayerImpl>(0).attention->query_key_value;
  EXPECT_NEAR(qkv->weight.std().item<double>(), 0.02, 0.002);
  EXPECT_EQ(qkv->bias.abs().max().item<float>(), 0.0f);
  EXPECT_EQ(model->lm_norm->weight.min().item<float>(), 1.0f);
}

}  // namespace
}  // namespace bakallm
