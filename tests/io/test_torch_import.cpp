// Import of real torch.save files (made by tests/fixtures/make_fixtures.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/model_dir.h"
#include "io/safetensors.h"
#include "io/torch_import.h"
#include "paths.h"
#include "tensor_asserts.h"
#include "util/error.h"

namespace bakallm {
namespace {

class TorchImport : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(test::golden("tiny.safetensors"))) GTEST_SKIP() << "needs ../shared/golden";
    golden = read_safetensors(test::golden("tiny.safetensors")).tensors;
  }
  std::map<std::string, torch::Tensor> golden;
};

TEST_F(TorchImport, Float32StateDictEqualsGolden) {
  auto sd = read_torch_state_dict(test::fixture("tiny_proto_f32.pt"));
  ASSERT_EQ(sd.size(), golden.size());
  for (const auto& [name, t] : golden) {
    ASSERT_TRUE(sd.count(name)) << name;
    EXPECT_EQ(sd.at(name).scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::equal(sd.at(name), t)) << name;
  }
}

TEST_F(TorchImport, Bfloat16StateDictEqualsRoundedGolden) {
  auto sd = read_torch_state_dict(test::fixture("tiny_proto_bf16.pt"));
  ASSERT_EQ(sd.size(), golden.size());
  for (const auto& [name, t] : golden) {
    EXPECT_EQ(sd.at(name).scalar_type(), torch::kBFloat16) << name;
    EXPECT_TRUE(torch::equal(sd.at(name), t.to(torch::kBFloat16))) << name;
  }
}

TEST_F(TorchImport, ConvertedModelGivesGoldenLoss) {
  auto config = load_config(test::golden("tiny.config.json"));
  BakaLM model(config);
  load_weights(model, read_checkpoint(test::fixture("tiny_proto_f32.pt")), "tiny_proto_f32.pt");
  model->eval();
  auto cases = read_safetensors(test::golden("tiny.cases.safetensors")).tensors;
  torch::NoGradGuard no_grad;
  auto logits = model(cases.at("ids")).logits;
  EXPECT_TRUE(test::all_close(next_token_loss(logits, cases.at("ids")).reshape({1}), cases.at("loss")));
}

TEST_F(TorchImport, OtherShapeGivesTheReferenceLoss) {
  // D=24, L=3, M=3, W=5, V=50: the loss the reference forward computed in PyTorch.
  auto config = load_config(test::fixture("odd_shape.config.json"));
  BakaLM model(config);
  load_weights(model, read_checkpoint(test::fixture("odd_shape.pt")), "odd_shape.pt");
  model->eval();
  nlohmann::json expected;
  std::ifstream(test::fixture("odd_shape.expected.json")) >> expected;
  std::vector<std::vector<int64_t>> rows = expected["ids"];
  auto ids = torch::empty({int64_t(rows.size()), int64_t(rows[0].size())}, torch::kLong);
  for (size_t b = 0; b < rows.size(); ++b)
    for (size_t t = 0; t < rows[b].size(); ++t) ids[b][t] = rows[b][t];
  torch::NoGradGuard no_grad;
  auto loss = next_token_loss(model(ids).logits, ids).item<double>();
  EXPECT_NEAR(loss, expected["loss"].get<double>(), 1e-5 * expected["loss"].get<double>());
}

TEST_F(TorchImport, ReportsMissingUnexpectedAndMisshapen) {
  auto config = load_config(test::golden("tiny.config.json"));
  BakaLM model(config);
  auto sd = golden;
  sd.erase("lm_norm.bias");
  sd["model.extra.weight"] = torch::zeros({2});
  sd["embed_out.weight"] = torch::zeros({3, 3});
  try {
    load_weights(model, sd, "ckpt.pt");
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ckpt.pt: "), std::string::npos) << msg;
    EXPECT_NE(msg.find("missing tensors: lm_norm.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected tensors: model.extra.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("embed_out.weight [3, 3] (expected [64, 32])"), std::string::npos) << msg;
  }
}

TEST_F(TorchImport, RotaryBufferIsOptionalButChecked) {
  auto config = load_config(test::golden("tiny.config.json"));
  BakaLM model(config);
  auto sd = golden;
  sd.erase("model.layers.0.attn.qkv.pos_emb.freqs");
  EXPECT_NO_THROW(load_weights(model, sd, "x"));
  sd["model.layers.1.attn.qkv.pos_emb.freqs"] = sd["model.layers.1.attn.qkv.pos_emb.freqs"] * 2;
  EXPECT_THROW(load_weights(model, sd, "x"), Error);
}

TEST_F(TorchImport, RejectsNonCheckpoints) {
  test::TempDir dir;
  std::ofstream(dir / "junk.pt") << "PK\x03\x04 this is not a zip";
  try {
    read_checkpoint(dir / "junk.pt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.pt"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "text.pt") << "hello";
  EXPECT_THROW(read_checkpoint(dir / "text.pt"), Error);
  EXPECT_THROW(read_checkpoint(dir / "absent.pt"), Error);
}

}  // namespace
}  // namespace bakallm
