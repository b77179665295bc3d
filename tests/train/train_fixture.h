// A training fixture: a tokenized corpus of short "stories" over a 64-id
// vocabulary, small-model options, and the losses a run wrote.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/shard.h"
#include "paths.h"
#include "small_config.h"
#include "train/trainer.h"

namespace bakallm {

// A tokenized corpus of short "stories" over a 64-id vocabulary.
class TrainRun : public ::testing::Test {
 protected:
  void SetUp() override {
    data = dir / "data";
    std::filesystem::create_directories(data);
    std::vector<uint32_t> train, val;
    for (int d = 0; d < 60; ++d) {
      auto& out = d % 10 == 9 ? val : train;
      out.push_back(1);
      for (int i = 0; i < 20 + d % 7; ++i) out.push_back(3 + static_cast<uint32_t>((d + i * 3) % 12));
    }
    write_shard(data + "/train_000000.bin", train);
    write_shard(data + "/val_000000.bin", val);
    std::ofstream(data + "/manifest.json") << R"({"train_shards": ["train_000000.bin"], "val_shards": ["val_000000.bin"], "bos_id": 1, "vocab_size": 64})";
    o.config = test::small_config(32, 2, 2, 64, 8, 64);
    o.config.attn_dropout = 0.1;  // exercises the RNG in resume
    o.data_dir = data;
    o.batch_rows = 3;
    o.optimizer.lr = 3e-3;
    o.warmup = 3;
    o.eval_every = 5;
    o.checkpoint_every = 5;
    o.sample_tokens = 0;
    o.progress = false;
  }
  std::vector<double> losses(const std::string& run) {
    std::vector<double> out;
    std::ifstream in(run + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) out.push_back(j["loss"].get<double>());
    }
    return out;
  }
  // STEPS in one run ("whole"), and in a run stopped after its first step
  // and resumed ("split", checkpoints every CHECKPOINT_EVERY): equal losses.
  void expect_exact_resume(int64_t steps, int64_t checkpoint_every) {
    o.steps = steps;
    o.run_dir = dir / "whole";
    train(o);
    o.run_dir = dir / "split";
    o.checkpoint_every = checkpoint_every;
    o.max_minutes = 1e-9;  // stops (with a checkpoint) after its first step
    auto first = train(o);
    EXPECT_TRUE(first.interrupted);
    EXPECT_EQ(first.steps, 1);
    o.max_minutes = 0;
    o.resume = true;
    train(o);
    auto a = losses(dir / "whole"), b = losses(dir / "split");
    ASSERT_EQ(a.size(), static_cast<size_t>(steps));
    ASSERT_EQ(b.size(), static_cast<size_t>(steps));
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * a[i]) << "step " << i + 1;
  }
  test::TempDir dir;
  std::string data;
  TrainOptions o;
};

// TrainRun for tests that drive the binary: a small config with dropout as DIR/c.json.
class CliTrainRun : public TrainRun {
 protected:
  void SetUp() override {
    TrainRun::SetUp();
    std::ofstream(dir / "c.json") << R"({"hidden_dim": 32, "num_layers": 2, "num_memory_tokens": 2, "window_size": 8,
                                          "vocab_size": 64, "attn_dropout": 0.1})";
  }
};

}  // namespace bakallm
