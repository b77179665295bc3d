// Training: optimizer groups, schedule, resume exactness,
// SIGINT, NaN, and a short run whose loss falls.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/shard.h"
#include "model/targets.h"
#include "paths.h"
#include "small_config.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "train/schedule.h"
#include "train/trainer.h"
#include "train/train_fixture.h"
#include "util/error.h"

namespace bakallm {
namespace {

TEST(Optimizer, ParameterGroups) {
  auto model = make_model(test::small_config(16, 1, 2, 32, 4, 20), 0);
  for (const auto& p : model->named_parameters()) {
    const auto& n = p.key();
    const bool expect_decay = n.find("norm") == std::string::npos && n.find(".bias") == std::string::npos &&
                              n.find("memory_tokens") == std::string::npos && n.find("sep_tokens") == std::string::npos &&
                              n.find("dampeners") == std::string::npos && n.find("negator") == std::string::npos;
    EXPECT_EQ(decays(n, p.value()), expect_decay) << n;
  }
  auto opt = make_optimizer(model, {});
  ASSERT_EQ(opt->param_groups().size(), 2u);
  EXPECT_EQ(static_cast<torch::optim::AdamWOptions&>(opt->param_groups()[0].options()).weight_decay(), 0.1);
  EXPECT_EQ(static_cast<torch::optim::AdamWOptions&>(opt->param_groups()[1].options()).weight_decay(), 0.0);
  set_learning_rate(*opt, 0.5);
  EXPECT_EQ(static_cast<torch::optim::AdamWOptions&>(opt->param_groups()[1].options()).lr(), 0.5);
}

// Three AdamW steps, the gradients cleared to none before each backward
// (clear_grads, then zero_missing_grads) or zeroed in place as torch's
// zero_grad does: the same parameters to the bit (a gradient taken as it is
// equals one added to zeros). The head's weight goes unreached in the later
// steps (its gradient dropped after the backward, in both runs): it is
// updated as with a zeroed gradient, its weight decay applied, not skipped.
// The solidifier's gates over a past it never has are never reached: AdamW
// passes them over in both.
TEST(Optimizer, ClearedGradientsStepAsZeroedOnes) {
  const auto config = test::small_config(16, 1, 2, 32, 4, 20);
  auto cleared = make_model(config, 0), zeroed = make_model(config, 0);
  auto ids = torch::randint(0, 20, {2, 8}, torch::kLong);
  auto targets = shifted_targets(ids);
  auto param = [](BakaLM& m, const char* name) { return m->named_parameters()[name]; };
  const char* head = "embed_out.weight";
  const char* never = "model.memory_injector.memory_solidifer.attn.past_k_gate.fc.weight";
  std::vector<torch::Tensor> heads;
  auto run = [&](BakaLM& model, bool clear) {
    auto opt = make_optimizer(model, {});
    for (int step = 0; step < 3; ++step) {
      if (clear) {
        clear_grads(model->parameters());
        for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
      } else {
        opt->zero_grad();
      }
      model->forward_loss(ids, targets).loss.backward();
      EXPECT_FALSE(param(model, never).grad().defined());
      if (step > 0 && clear) param(model, head).mutable_grad().reset();  // as if no backward had reached it
      if (step > 0 && !clear) param(model, head).mutable_grad().zero_();
      if (clear) zero_missing_grads(*opt);
      EXPECT_TRUE(param(model, head).grad().defined());
      EXPECT_FALSE(param(model, never).grad().defined());
      if (step == 1) heads.push_back(param(model, head).detach().clone());
      opt->step();
    }
  };
  run(cleared, true);
  run(zeroed, false);
  EXPECT_FALSE(torch::equal(param(cleared, head), heads[0]));  // decayed in the unreached steps, not skipped
  for (const auto& p : cleared->named_parameters())
    EXPECT_TRUE(torch::equal(p.value(), zeroed->named_parameters()[p.key()])) << p.key();
}

TEST(Trainer, Bfloat16AdviceOnlyWhereItIsSlower) {
  EXPECT_EQ(bfloat16_advice(240e9, 480e9), "");
  EXPECT_EQ(bfloat16_advice(240e9, 240e9), "");
  EXPECT_EQ(bfloat16_advice(240e9, 140e9),
            "note: bfloat16 products run at 140 GFLOP/s on this CPU against 240 for float32: "
            "--dtype float32 trains faster here");
}

TEST(Schedule, WarmupThenCosine) {
  LrSchedule s{1.0, 0.1, 10, 110};
  EXPECT_NEAR(s.at(0), 0.1, 1e-12);
  EXPECT_NEAR(s.at(9), 1.0, 1e-12);
  EXPECT_NEAR(s.at(60), 0.55, 1e-9);  // halfway down the cosine
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);
  EXPECT_NEAR(s.at(500), 0.1, 1e-12);
}

TEST_F(TrainRun, LossFallsWellBelowItsStart) {
  o.steps = 60;
  o.run_dir = dir / "run";
  auto r = train(o);
  EXPECT_EQ(r.steps, 60);
  EXPECT_LT(r.last_loss, 0.6 * r.first_loss) << r.first_loss << " -> " << r.last_loss;
  EXPECT_LT(r.val_loss, 0.6 * r.first_loss);
  EXPECT_EQ(list_checkpoints(o.run_dir).size(), 3u);  // keep the last 3
  EXPECT_TRUE(std::filesystem::exists(o.run_dir + "/checkpoints/step_60/model.safetensors"));
}

TEST_F(TrainRun, ResumeGivesTheSameLosses) { expect_exact_resume(12, 5); }

// --packing stream: no padding in any step, and a resume is as exact as with documents.
TEST_F(TrainRun, StreamPackingHasNoPaddingAndResumesExactly) {
  o.packing = "stream";
  expect_exact_resume(8, 3);
  std::ifstream in(dir / "whole/metrics.jsonl");
  int steps = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (!j.contains("padding")) continue;
    EXPECT_EQ(j["padding"].get<double>(), 0.0);
    ++steps;
  }
  EXPECT_EQ(steps, 8);
}

// The GPT-NeoX baseline trains with the same trainer: windows of W read
// alone, no state; it learns, and a resume (dropout on) is exact.
Config small_neox() {
  return config_from_json({{"model_type", "gpt_neox"}, {"hidden_size", 32}, {"num_hidden_layers", 2},
                           {"num_attention_heads", 4}, {"intermediate_size", 64}, {"vocab_size", 64},
                           {"max_position_embeddings", 16}, {"window_size", 8}, {"attention_dropout", 0.1},
                           {"hidden_dropout", 0.1}},
                          "small neox");
}

TEST_F(TrainRun, GptNeoxLearnsAndResumesExactly) {
  o.config = small_neox();
  o.steps = 40;
  o.run_dir = dir / "run";
  auto r = train(o);
  EXPECT_LT(r.last_loss, 0.6 * r.first_loss) << r.first_loss << " -> " << r.last_loss;
  expect_exact_resume(8, 3);
}

// --dtype auto: a concrete dtype is recorded; a resumed run keeps the one it
// started with whatever this machine measures, so the resume stays exact.
TEST_F(TrainRun, DtypeAutoRecordsItsChoiceAndAResumeKeepsTheRunsOwn) {
  auto recorded = [](const std::string& run) {
    return nlohmann::json::parse(std::ifstream(run + "/train_config.json"))["dtype"].get<std::string>();
  };
  o.dtype = "auto";
  o.steps = 2;
  o.run_dir = dir / "auto";
  train(o);
  const auto picked = recorded(dir / "auto");
  EXPECT_TRUE(picked == "float32" || picked == "bfloat16") << picked;
  // Whole in bfloat16; split: bfloat16, then resumed with auto. Same losses.
  o.steps = 6;
  o.dtype = "bfloat16";
  o.run_dir = dir / "whole";
  train(o);
  o.run_dir = dir / "split";
  o.checkpoint_every = 2;
  o.max_minutes = 1e-9;  // stops with a checkpoint after its first step
  train(o);
  o.max_minutes = 0;
  o.resume = true;
  o.dtype = "auto";
  EXPECT_EQ(resolve_dtype(o, true), "bfloat16");
  train(o);
  EXPECT_EQ(recorded(dir / "split"), "bfloat16");
  auto a = losses(dir / "whole"), b = losses(dir / "split");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * a[i]) << "step " << i + 1;
  o.dtype = "float64";
  EXPECT_THROW(resolve_dtype(o, true), Error);
}

TEST_F(TrainRun, NanLossStopsNamingTheStep) {
  o.steps = 40;
  o.optimizer.lr = 1e9;
  o.warmup = 1;
  o.clip = 1e30;
  o.run_dir = dir / "nan";
  try {
    train(o);
    FAIL() << "no NaN";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("step "), std::string::npos) << msg;
    EXPECT_NE(msg.find("loss is"), std::string::npos) << msg;
  }
  for (const auto& c : list_checkpoints(o.run_dir))  // what was saved is intact
    EXPECT_TRUE(std::filesystem::exists(c + "/model.safetensors"));
}

// SIGINT: the binary finishes its step, checkpoints, exits 0; --resume continues.
TEST_F(TrainRun, SigintLeavesALoadableCheckpoint) {
  std::ofstream(dir / "c.json") << R"({"hidden_dim": 32, "num_layers": 2, "num_memory_tokens": 2, "window_size": 8, "vocab_size": 64})";
  const std::string run = dir / "sig";
  const std::string cmd = test::binary() + " --threads 1 train --config " + dir / "c.json" + " --data " + data +
                          " --out " + run + " --steps 100000 --batch 2 --checkpoint-every 100000 --sample-tokens 0 --eval-every 0";
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", ("exec " + cmd + " >/dev/null 2>&1").c_str(), nullptr);
    _exit(127);
  }
  // Wait until it has taken a few steps.
  for (int i = 0; i < 600 && losses(run).size() < 3; ++i) usleep(100000);
  ASSERT_GE(losses(run).size(), 3u);
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto ckpts = list_checkpoints(run);
  ASSERT_EQ(ckpts.size(), 1u);
  std::ifstream in(ckpts[0] + "/train_state.json");
  auto state = nlohmann::json::parse(in);
  EXPECT_GE(state["step"].get<int64_t>(), 3);
  EXPECT_EQ(std::system((test::binary() + " --threads 1 train --config " + dir / "c.json" + " --data " + data + " --out " +
                         run + " --steps " + std::to_string(state["step"].get<int64_t>() + 2) +
                         " --batch 2 --sample-tokens 0 --resume >/dev/null 2>&1")
                            .c_str()),
            0);
  EXPECT_EQ(losses(run).size(), static_cast<size_t>(state["step"].get<int64_t>() + 2));
}

}  // namespace
}  // namespace bakallm
