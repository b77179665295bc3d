// `bakallm experiment`: bad plans are refused before anything trains; a plan
// trains every variant x seed (BakaLLM switches and the GPT-NeoX baseline),
// records them, reports mean ± std with the noise test, and draws the
// curves; a second run skips what is recorded; an experiment killed in the
// middle of a run and started again ends with the same numbers as one that
// was never interrupted.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "eval/results_db.h"
#include "experiment/plan.h"
#include "util/error.h"
#include "util/sqlite.h"
#include "paths.h"
#include "process.h"
#include "run_cli.h"

namespace bakallm {
namespace {

namespace fs = std::filesystem;

class Experiment : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string tok = test::data("tokenizer/openllama_v1_tokenizer.RECONSTRUCTED.model");
    if (!fs::exists(tok)) GTEST_SKIP() << "needs ../shared/data/tokenizer";
    {
      std::ofstream text(dir / "stories.txt");
      for (int i = 0; i < 300; ++i)
        text << "Story " << i % 17 << ": the cat sat on the mat and the dog ran to the park.\n\n";
      std::ofstream eval(dir / "eval.txt");
      for (int i = 0; i < 6; ++i) eval << "The dog sat on the mat, story " << i << ".\n\n";
    }
    auto t = test::run_cli("tokenize --tokenizer " + tok + " --input " + dir / "stories.txt" +
                           " --separator blank --val-fraction 0.1 --out " + dir / "data");
    ASSERT_EQ(t.status, 0) << t.out;
    plan = {
        {"data", "data"},
        {"budget", {{"tokens", 320}}},  // 10 steps of 2 rows x 1 window of 16
        {"seeds", {1, 2}},
        {"train", {{"batch", 2}, {"windows_per_step", 1}, {"lr", 0.003}, {"warmup", 2}, {"eval_every", 5},
                   {"eval_tokens", 256}, {"checkpoint_every", 3}, {"packing", "stream"}}},
        {"eval", {{{"name", "eval-text"}, {"texts", {"eval.txt"}}, {"protocol", "stream"}, {"max_tokens", 200}}}},
        {"base", {{"hidden_dim", 16}, {"num_layers", 1}, {"num_memory_tokens", 2}, {"window_size", 16},
                  {"vocab_size", 32000}, {"detach_every", 1}, {"attn_dropout", 0.1}}},
        {"variants", nlohmann::ordered_json::object()}};
    plan["variants"]["prototype"] = nlohmann::ordered_json::object();
    plan["variants"]["no_negator"] = {{"negator", false}};
    plan["variants"]["gpt_neox"] = {{"model_type", "gpt_neox"}, {"hidden_size", 16}, {"num_hidden_layers", 1},
                                    {"num_attention_heads", 2}, {"intermediate_size", 64}, {"rotary_pct", 0.5}};
  }
  std::string write_plan(const nlohmann::ordered_json& p, const std::string& name = "plan.json") {
    std::ofstream(dir / name) << p.dump(2);
    return dir / name;
  }
  void expect_refused(const nlohmann::ordered_json& p, const std::string& words) {
    const auto path = write_plan(p, "bad.json");
    auto r = test::run_cli("experiment run " + path + " --out " + dir / "bad_out");
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_NE(r.out.find(words), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "not one line: " << r.out;
    EXPECT_FALSE(fs::exists(dir / "bad_out")) << "something was written for a bad plan";
  }
  // (variant, seed) -> validation loss, and the evaluation losses, from OUT's database.
  std::map<std::string, double> recorded(const std::string& out) {
    SqliteDb db(out + "/results.sqlite3", false);
    std::map<std::string, double> m;
    SqliteStatement runs(db, "SELECT variant, seed, val_loss, train_loss FROM runs");
    while (runs.row()) {
      const auto key = runs.column_text(0) + "/" + std::to_string(runs.column_int(1));
      m[key + " val"] = runs.column_real(2);
      m[key + " train"] = runs.column_real(3);
    }
    SqliteStatement evals(db, "SELECT variant, seed, loss FROM evals");
    while (evals.row()) m[evals.column_text(0) + "/" + std::to_string(evals.column_int(1)) + " eval"] = evals.column_real(2);
    return m;
  }
  test::TempDir dir;
  nlohmann::ordered_json plan;
};

TEST_F(Experiment, BadPlansAreRefusedBeforeAnythingTrains) {
  auto p = plan;
  p["epochs"] = 3;
  expect_refused(p, "unknown field 'epochs'");
  p = plan;
  p["variants"]["no_memory"] = {{"num_memory_tokens", 0}};  // the solidifier stays on: impossible
  expect_refused(p, "variant 'no_memory': solidifier cannot be true with num_memory_tokens 0");
  p = plan;
  p["variants"]["typo"] = {{"negatr", false}};
  expect_refused(p, "variant 'typo': unknown field 'negatr'");
  p = plan;
  p["data"] = "missing";
  expect_refused(p, "no manifest.json");
  p = plan;
  p["eval"][0]["texts"] = {"nowhere.txt"};
  expect_refused(p, "nowhere.txt: no such evaluation text");
  p = plan;
  p["budget"] = {{"tokens", 100}, {"minutes", 1}};
  expect_refused(p, "exactly one of");
  p = plan;
  p["base"]["vocab_size"] = 100;
  expect_refused(p, "is smaller than the data's 32000");
  p = plan;
  p["seeds"] = {1, 1};
  expect_refused(p, "seed 1 is listed twice");
  p = plan;
  p["variants"]["../escape"] = nlohmann::ordered_json::object();
  expect_refused(p, "a name may hold only");
}

TEST_F(Experiment, TrainsEveryVariantAndSeedRecordsAndReports) {
  const auto path = write_plan(plan);
  const std::string out = dir / "exp";
  auto r = test::run_cli("experiment run " + path + " --out " + out);
  ASSERT_EQ(r.status, 0) << r.out;
  const auto m = recorded(out);
  for (const char* v : {"prototype", "no_negator", "gpt_neox"})
    for (int seed : {1, 2}) {
      const std::string key = std::string(v) + "/" + std::to_string(seed);
      ASSERT_TRUE(m.count(key + " val")) << key;
      EXPECT_TRUE(std::isfinite(m.at(key + " val")) && m.at(key + " val") > 0) << key;
      EXPECT_TRUE(m.count(key + " eval")) << key;
    }
  EXPECT_NE(m.at("prototype/1 val"), m.at("prototype/2 val"));  // the seed changes the run
  // One budget: 320 positions = 10 steps for every run, and (stream packing,
  // same data) the same tokens scored by every variant and seed.
  SqliteDb db(out + "/results.sqlite3", false);
  SqliteStatement steps(db, "SELECT DISTINCT steps, tokens FROM runs");
  ASSERT_TRUE(steps.row());
  EXPECT_EQ(steps.column_int(0), 10);
  EXPECT_GT(steps.column_int(1), 280);  // BOS targets are not scored
  EXPECT_FALSE(steps.row()) << "runs differ in steps or tokens";
  SqliteStatement curves(db, "SELECT COUNT(*) FROM curves");
  ASSERT_TRUE(curves.row());
  EXPECT_EQ(curves.column_int(0), 6 * 2);  // steps 5 and 10
  // The report: every variant, mean ± std over 2 seeds, Δ against the first.
  const auto report = test::read_file(out + "/report.md");
  EXPECT_NE(report.find("| prototype | 2 |"), std::string::npos) << report;
  EXPECT_NE(report.find("| gpt_neox | 2 |"), std::string::npos) << report;
  EXPECT_NE(report.find(" ± "), std::string::npos) << report;
  EXPECT_NE(report.find("eval-text (stream)"), std::string::npos) << report;
  EXPECT_TRUE(report.find("(> 2σ)") != std::string::npos || report.find("(noise)") != std::string::npos) << report;
  EXPECT_GT(fs::file_size(out + "/curves.png"), 1000u);
  // The author's results table got one row per run and evaluation.
  EXPECT_EQ(read_results(out + "/results.sqlite3", "eval-text").size(), 6u);
  // Again: everything is recorded, nothing trains; `report` redraws the same table.
  auto again = test::run_cli("experiment run " + path + " --out " + out);
  ASSERT_EQ(again.status, 0) << again.out;
  size_t skipped = 0;
  for (size_t at = 0; (at = again.out.find("recorded, skipped", at)) != std::string::npos; ++at) ++skipped;
  EXPECT_EQ(skipped, 6u) << again.out;
  EXPECT_EQ(recorded(out), m);
  auto rep = test::run_cli("experiment report " + out);
  ASSERT_EQ(rep.status, 0) << rep.out;
  EXPECT_EQ(rep.out.substr(0, report.size()), report);
  // A changed budget on the same directory is refused: runs would not compare.
  auto changed = plan;
  changed["budget"]["tokens"] = 640;
  auto refused = test::run_cli("experiment run " + write_plan(changed, "changed.json") + " --out " + out);
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.out.find("another --out"), std::string::npos) << refused.out;
  // A directory with someone else's files is not used.
  fs::create_directories(dir / "mine");
  std::ofstream(dir / "mine/notes.txt") << "mine";
  auto foreign = test::run_cli("experiment run " + path + " --out " + dir / "mine");
  EXPECT_NE(foreign.status, 0);
  EXPECT_EQ(test::read_file(dir / "mine/notes.txt"), "mine");
}

TEST_F(Experiment, KilledInTheMiddleOfARunEndsWithTheSameNumbers) {
  plan["variants"].erase("no_negator");
  plan["seeds"] = {5};
  const auto path = write_plan(plan);
  ASSERT_EQ(test::run_cli("experiment run " + path + " --out " + dir / "whole").status, 0);
  // Kill -9 once the first run has a checkpoint, before it finishes.
  const std::string out = dir / "killed";
  const pid_t pid = test::start("experiment run " + path + " --out " + out, dir / "k.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(out + "/runs/prototype/seed5/checkpoints/step_3") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(pid, SIGKILL);
  test::wait_for(pid);
  auto r = test::run_cli("experiment run " + path + " --out " + out);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("resuming"), std::string::npos) << r.out;
  const auto a = recorded(dir / "whole"), b = recorded(out);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [key, value] : a) EXPECT_NEAR(b.at(key), value, 1e-5 * std::fabs(value)) << key;
  EXPECT_EQ(test::leftovers(out), std::vector<std::string>{});
}

// A budget in minutes: each run trains for that long on a schedule of
// budget.steps, then is evaluated and recorded like any other.
TEST_F(Experiment, AMinutesBudgetStopsEveryRunOnTime) {
  plan["budget"] = {{"minutes", 0.03}, {"steps", 100000}};
  plan["variants"].erase("no_negator");
  plan["seeds"] = {1};
  plan["train"]["eval_every"] = 1000000;
  auto r = test::run_cli("experiment run " + write_plan(plan) + " --out " + dir / "timed");
  ASSERT_EQ(r.status, 0) << r.out;
  SqliteDb db(dir / "timed/results.sqlite3", false);
  SqliteStatement q(db, "SELECT variant, steps, seconds, budget FROM runs");
  int runs = 0;
  while (q.row()) {
    ++runs;
    EXPECT_GT(q.column_int(1), 0) << q.column_text(0);
    EXPECT_LT(q.column_int(1), 100000) << q.column_text(0);
    EXPECT_GE(q.column_real(2), 0.03 * 60) << q.column_text(0);
    EXPECT_LT(q.column_real(2), 0.03 * 60 + 30) << q.column_text(0);
    EXPECT_EQ(q.column_text(3), "0.03 minutes");
  }
  EXPECT_EQ(runs, 2);
}

}  // namespace
}  // namespace bakallm
