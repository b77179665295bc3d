// The bakallm binary end to end: init / info / convert / eval, and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/shard.h"
#include "io/safetensors.h"
#include "paths.h"
#include "run_cli.h"

namespace bakallm {
namespace {

using Run = test::CliRun;
Run run(const std::string& args) { return test::run_cli(args); }

void expect_one_line_error(const Run& r, const std::string& needle) {
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_NE(r.out.find(needle), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "not one line: " << r.out;
}

// Each row of IDS [B, T] as its own shard in DIR: " DIR/row0.bin DIR/row1.bin ...".
std::string shard_per_row(const torch::Tensor& ids, const test::TempDir& dir) {
  std::string shards;
  for (int64_t b = 0; b < ids.size(0); ++b) {
    std::vector<uint32_t> row;
    for (int64_t t = 0; t < ids.size(1); ++t) row.push_back(static_cast<uint32_t>(ids[b][t].item<int64_t>()));
    const auto path = dir / ("row" + std::to_string(b) + ".bin");
    write_shard(path, row);
    shards += " " + path;
  }
  return shards;
}

const char* kSmallConfig =
    R"({"hidden_dim": 16, "num_layers": 2, "num_memory_tokens": 2, "window_size": 8, "vocab_size": 50})";

TEST(Cli, InitThenInfo) {
  test::TempDir dir;
  std::ofstream(dir / "c.json") << kSmallConfig;
  auto init = run("init --config " + dir / "c.json" + " --seed 3 --out " + dir / "m");
  ASSERT_EQ(init.status, 0) << init.out;
  EXPECT_TRUE(std::filesystem::exists(dir / "m/config.json"));
  EXPECT_TRUE(std::filesystem::exists(dir / "m/model.safetensors"));
  auto info = run("info " + dir / "m" + " --json");
  ASSERT_EQ(info.status, 0) << info.out;
  auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["config"]["hidden_dim"], 16);
  EXPECT_EQ(j["config"]["intermediate_dim"], 64);
  EXPECT_EQ(j["parameters"]["embed_in"], 50 * 16);
  EXPECT_GT(j["flops_per_token"]["forward"].get<double>(), 0);
  auto text = run("info " + dir / "m");
  EXPECT_EQ(text.status, 0);
  EXPECT_NE(text.out.find("total"), std::string::npos);
  // Same seed, same weights.
  ASSERT_EQ(run("init --config " + dir / "c.json" + " --seed 3 --out " + dir / "m2").status, 0);
  auto a = read_safetensors(dir / "m/model.safetensors").tensors;
  auto b = read_safetensors(dir / "m2/model.safetensors").tensors;
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
}

TEST(Cli, InitPresetWritesTheSpecShapes) {
  test::TempDir dir;
  ASSERT_EQ(run("init --preset tiny --seed 0 --out " + dir / "tiny").status, 0);
  auto info = nlohmann::json::parse(run("info --json " + dir / "tiny").out);
  EXPECT_EQ(info["config"]["hidden_dim"], 320);
  EXPECT_EQ(info["config"]["num_layers"], 8);
  EXPECT_EQ(info["parameters"]["embed_out"], 32000 * 320);
}

class CliGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(test::golden("tiny.safetensors"))) GTEST_SKIP() << "needs ../shared/golden";
  }
};

// Convert the prototype's .pt, then eval the golden ids (each row its own document)
// and get the golden loss: 28 scored tokens per row, so the token mean is the batch mean.
TEST_F(CliGolden, ConvertThenEvalGivesTheGoldenLoss) {
  test::TempDir dir;
  auto conv = run("convert --from " + test::fixture("tiny_proto_f32.pt") + " --config " +
                  test::golden("tiny.config.json") + " --out " + dir / "m");
  ASSERT_EQ(conv.status, 0) << conv.out;
  auto cases = read_safetensors(test::golden("tiny.cases.safetensors")).tensors;
  auto ids = cases.at("ids");
  const std::string shards = shard_per_row(ids, dir);
  auto ev = run("eval --model " + dir / "m" + " --bos-id 1000000 --json --data" + shards);
  ASSERT_EQ(ev.status, 0) << ev.out;
  auto j = nlohmann::json::parse(ev.out);
  const double golden = cases.at("loss").item<double>();
  EXPECT_NEAR(j["loss"].get<double>(), golden, 1e-5 * golden);
  EXPECT_NEAR(j["ppl"].get<double>(), std::exp(golden), 1e-4 * std::exp(golden));
  EXPECT_EQ(j["tokens"], 2 * 28);
  EXPECT_EQ(j["documents"], 2);

  // The same weights from the golden safetensors file convert identically.
  ASSERT_EQ(run("convert --from " + test::golden("tiny.safetensors") + " --config " + test::golden("tiny.config.json") +
                " --out " + dir / "m2")
                .status,
            0);
  auto ev2 = run("eval --model " + dir / "m2" + " --bos-id 1000000 --json --data" + shards);
  EXPECT_EQ(nlohmann::json::parse(ev2.out)["loss"], j["loss"]);
}

TEST_F(CliGolden, ConvertWithTheWrongConfigNamesTheTensors) {
  test::TempDir dir;
  std::ofstream(dir / "c.json") << kSmallConfig;
  auto r = run("convert --from " + test::fixture("tiny_proto_f32.pt") + " --config " + dir / "c.json" + " --out " +
               dir / "m");
  expect_one_line_error(r, "tiny_proto_f32.pt: ");
  EXPECT_NE(r.out.find("wrong shapes"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir / "m"));
}

// A Hugging Face GPT-NeoX directory (config.json with HF's fields,
// model.safetensors with the buffers old checkpoints carry) converts with
// --from DIR alone, and eval gives the plain-PyTorch reference's loss.
TEST(Cli, ConvertHuggingFaceGptNeoxDirectoryThenEval) {
  test::TempDir dir;
  auto conv = run("convert --from " + test::fixture("neox_parallel") + " --out " + dir / "m");
  ASSERT_EQ(conv.status, 0) << conv.out;
  auto info = nlohmann::json::parse(run("info --json " + dir / "m").out);
  EXPECT_EQ(info["config"]["model_type"], "gpt_neox");
  EXPECT_EQ(info["config"]["hidden_size"], 32);
  auto cases = read_safetensors(test::fixture("neox_parallel.expected.safetensors")).tensors;
  auto ids = cases.at("ids");
  const std::string shards = shard_per_row(ids, dir);
  for (const char* protocol : {"stream", "sliding --ctx 64"}) {
    auto ev = run("eval --model " + dir / "m" + " --bos-id 1000000 --json --protocol " + protocol + " --data" + shards);
    ASSERT_EQ(ev.status, 0) << ev.out;
    const double expected = cases.at("loss").item<double>();
    EXPECT_NEAR(nlohmann::json::parse(ev.out)["loss"].get<double>(), expected, 1e-5 * expected) << protocol;
  }
  // A directory without weights, and one with a sharded checkpoint: one line each.
  std::filesystem::create_directories(dir / "empty");
  std::filesystem::copy_file(test::fixture("neox_parallel/config.json"), dir / "empty/config.json");
  expect_one_line_error(run("convert --from " + dir / "empty" + " --out " + dir / "m2"),
                        "holds no model.safetensors or pytorch_model.bin");
  std::ofstream(dir / "empty/model.safetensors.index.json") << "{}";
  expect_one_line_error(run("convert --from " + dir / "empty" + " --out " + dir / "m2"), "sharded checkpoint");
  EXPECT_FALSE(std::filesystem::exists(dir / "m2"));
}

TEST(Cli, BadInput) {
  test::TempDir dir;
  expect_one_line_error(run("info " + dir / "nothing"), "nothing: not a model directory");
  expect_one_line_error(run("convert --from " + dir / "absent.pt --config " + dir / "c.json --out " + dir / "x"),
                        "c.json: cannot open config");
  std::ofstream(dir / "c.json") << kSmallConfig;
  expect_one_line_error(run("convert --from " + dir / "absent.pt --config " + dir / "c.json --out " + dir / "x"),
                        "absent.pt: cannot open checkpoint");
  ASSERT_EQ(run("init --config " + dir / "c.json" + " --seed 1 --out " + dir / "m").status, 0);
  std::ofstream(dir / "bad.bin") << std::string(2000, 'x');
  expect_one_line_error(run("eval --model " + dir / "m" + " --data " + dir / "bad.bin"), "bad.bin: not a token shard");
  expect_one_line_error(run("eval --model " + dir / "m" + " --data " + dir / "missing.bin"), "missing.bin: cannot open");
  write_shard(dir / "big.bin", {1, 2, 70});
  expect_one_line_error(run("eval --model " + dir / "m" + " --data " + dir / "big.bin"), "outside the model's vocabulary");
  expect_one_line_error(run("init --preset huge --seed 1 --out " + dir / "h"), "unknown preset 'huge'");
  std::ofstream(dir / "typo.json") << R"({"hidden_dim": 16, "num_layer": 2})";
  expect_one_line_error(run("init --config " + dir / "typo.json" + " --seed 1 --out " + dir / "t"),
                        "typo.json: unknown field 'num_layer'");
  // A model directory whose weights do not match its config.
  std::filesystem::copy_file(dir / "m/model.safetensors", dir / "m2.safetensors");
  std::filesystem::create_directories(dir / "m2");
  std::filesystem::copy_file(dir / "m2.safetensors", dir / "m2/model.safetensors");
  std::ofstream(dir / "m2/config.json") << R"({"hidden_dim": 32, "num_layers": 2, "num_memory_tokens": 2, "window_size": 8, "vocab_size": 50})";
  expect_one_line_error(run("info " + dir / "m2"), "model.safetensors: ");
  EXPECT_NE(run("bogus").status, 0);
}

}  // namespace
}  // namespace bakallm

namespace bakallm {
namespace {

TEST(CliGenerate, IdsInIdsOutAndBadInput) {
  test::TempDir dir;
  std::ofstream(dir / "c.json") << R"({"hidden_dim": 16, "num_layers": 2, "num_memory_tokens": 2, "window_size": 4, "vocab_size": 50})";
  ASSERT_EQ(run("init --config " + dir / "c.json" + " --seed 1 --out " + dir / "m").status, 0);
  auto r = run("generate --model " + dir / "m" + " --prompt-ids 1,5,7,9,11,13 --max-new 9 --temperature 0 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ids"].size(), 9u);
  EXPECT_EQ(j["prompt_tokens"], 6);
  EXPECT_GT(j["decode_tokens_per_s"].get<double>(), 0);
  // Same seed, same output; greedy ignores the seed.
  auto again = run("generate --model " + dir / "m" + " --prompt-ids 1,5,7,9,11,13 --max-new 9 --temperature 0 --json --seed 9");
  EXPECT_EQ(nlohmann::json::parse(again.out)["ids"], j["ids"]);
  auto plain = run("generate --model " + dir / "m" + " --prompt-ids 1,2 --max-new 3 --seed 4");
  EXPECT_EQ(plain.status, 0) << plain.out;
  expect_one_line_error(run("generate --model " + dir / "m" + " --prompt-ids 1,50"), "outside the vocabulary of 50");
  expect_one_line_error(run("generate --model " + dir / "m" + " --prompt-ids 1,x"), "'x' is not a token id");
  expect_one_line_error(run("generate --model " + dir / "m" + " --prompt hello"), "no tokenizer.model");
  expect_one_line_error(run("generate --model " + dir / "m" + " --prompt-ids 1 --top-p 0"), "--top-p must be in (0, 1]");
  expect_one_line_error(run("generate --model " + dir / "m" + " --prompt-ids 1 --top-p 1.5"), "--top-p must be in (0, 1]");
}

TEST(CliGenerate, TextPromptsWithATokenizer) {
  const auto tok = test::data("tokenizer/openllama_v1_tokenizer.RECONSTRUCTED.model");
  if (!std::filesystem::exists(tok)) GTEST_SKIP() << "needs ../shared/data/tokenizer";
  test::TempDir dir;
  std::ofstream(dir / "c.json") << R"({"hidden_dim": 16, "num_layers": 1, "num_memory_tokens": 2, "window_size": 8, "vocab_size": 32000})";
  ASSERT_EQ(run("init --config " + dir / "c.json" + " --seed 1 --out " + dir / "m --tokenizer " + tok).status, 0);
  auto r = run("generate --model " + dir / "m" + " --prompt 'Once upon a time' --max-new 5 --json --seed 3");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["prompt_tokens"], 5);  // BOS + 4 pieces
  std::ofstream(dir / "prompts.txt") << "one two\nthree four\n\n";
  auto b = run("generate --model " + dir / "m" + " --prompt-file " + dir / "prompts.txt" + " --batch 2 --max-new 3 --json");
  ASSERT_EQ(b.status, 0) << b.out;
  EXPECT_EQ(std::count(b.out.begin(), b.out.end(), '\n'), 3);  // one object per prompt, the empty one from BOS
  std::ofstream(dir / "bad.txt") << "caf\xe9\n";
  expect_one_line_error(run("generate --model " + dir / "m" + " --prompt-file " + dir / "bad.txt"), "not valid UTF-8");
}

}  // namespace
}  // namespace bakallm
