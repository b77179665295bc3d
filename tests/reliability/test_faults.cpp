// Fault injection against the real binary: kill -9 at random moments of
// training and checkpointing, a full disk (RLIMIT_FSIZE) during a checkpoint
// and during tokenize, a double Ctrl-C, and every overwrite case. After each:
// a clear one-line error and a non-zero exit where it failed, no temporary
// left behind, every earlier result loadable, and resumed losses equal to an
// uninterrupted run's.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "process.h"
#include "run_cli.h"
#include "train/checkpoint.h"
#include "train/train_fixture.h"
#include "util/atomic_file.h"

namespace bakallm {
namespace {

namespace fs = std::filesystem;
using test::leftovers;
using test::read_file;
using test::start;
using test::wait_for;

class Faults : public CliTrainRun {
 protected:
  std::string train_args(const std::string& run, int64_t steps, int64_t checkpoint_every = 1, int seed = 7) {
    return "train --config " + dir / "c.json" + " --data " + data + " --out " + run + " --steps " +
           std::to_string(steps) + " --batch 2 --lr 3e-3 --warmup 3 --checkpoint-every " +
           std::to_string(checkpoint_every) + " --keep 2 --sample-tokens 0 --eval-every 0 --dtype float32 --seed " +
           std::to_string(seed);  // float32 whatever `auto` would measure: runs in separate processes compare
  }
};

// Lines in FILE (0 when it does not exist yet).
size_t lines_in(const std::string& path) {
  const auto text = read_file(path);
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

// 20+ kills at random moments -- during start-up, steps, checkpoint writes and
// pruning: each run is killed after a random 0-5 steps past its checkpoint
// and a random 0-30 ms more -- each followed by --resume: the losses equal an
// uninterrupted run's and no temporary or half checkpoint is left.
TEST_F(Faults, KillNineAnywhereThenResumeIsExact) {
  const int64_t steps = 160;
  const std::string whole = dir / "whole", run = dir / "killed";
  ASSERT_EQ(wait_for(start(train_args(whole, steps), dir / "whole.log")), 0) << read_file(dir / "whole.log");
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> more_steps(0, 5), more_ms(0, 30);
  int kills = 0, runs = 0;
  for (; kills < 22 && runs < 60; ++runs) {
    const auto ckpts = list_checkpoints(run);
    const size_t resumed_at = ckpts.empty() ? 0 : std::stoul(fs::path(ckpts.back()).filename().string().substr(5));
    const size_t target = resumed_at + static_cast<size_t>(more_steps(rng));
    const pid_t pid = start(train_args(run, steps) + (runs ? " --resume" : ""), dir / "killed.log");
    int status = 0;
    bool exited = false;
    for (int i = 0; i < 30000; ++i) {  // until it has taken TARGET steps (or ended)
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        break;
      }
      if (lines_in(run + "/metrics.jsonl") >= target) break;
      usleep(2000);
    }
    if (exited) {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_file(dir / "killed.log");
      break;
    }
    usleep(1000 * more_ms(rng));
    kill(pid, SIGKILL);
    status = wait_for(pid);
    if (WIFSIGNALED(status)) ++kills;
    else ASSERT_EQ(status, 0) << read_file(dir / "killed.log");
  }
  EXPECT_GE(kills, 20);
  ASSERT_EQ(wait_for(start(train_args(run, steps) + " --resume", dir / "last.log")), 0) << read_file(dir / "last.log");
  const auto a = losses(whole), b = losses(run);
  ASSERT_EQ(a.size(), static_cast<size_t>(steps));
  ASSERT_EQ(b.size(), static_cast<size_t>(steps));
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i])) << "step " << i + 1;
  EXPECT_EQ(leftovers(run), std::vector<std::string>{});
  for (const auto& e : fs::directory_iterator(run + "/checkpoints"))  // only whole checkpoints remain
    EXPECT_TRUE(fs::exists(e.path() / "train_state.json") && fs::exists(e.path() / "optimizer.pt")) << e.path();
  EXPECT_EQ(list_checkpoints(run).size(), 2u);
}

// A full disk while a checkpoint is written: one line naming the file, exit 1
// (no abort), no temporary left, and the earlier checkpoint resumes.
TEST_F(Faults, FullDiskDuringACheckpoint) {
  const std::string run = dir / "full";
  ASSERT_EQ(wait_for(start(train_args(run, 4, 2), dir / "a.log")), 0) << read_file(dir / "a.log");
  const auto weights = fs::file_size(run + "/checkpoints/step_4/model.safetensors");
  const auto optimizer = fs::file_size(run + "/checkpoints/step_4/optimizer.pt");
  ASSERT_GT(optimizer, weights + 4096);
  const int status = wait_for(start(train_args(run, 8, 2) + " --resume", dir / "b.log", long(weights + 2048)));
  const std::string out = read_file(dir / "b.log");
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal: " << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_NE(out.find("bakallm: error: "), std::string::npos) << out;
  EXPECT_NE(out.find("optimizer.pt"), std::string::npos) << out;
  EXPECT_EQ(leftovers(run), std::vector<std::string>{});
  EXPECT_EQ(list_checkpoints(run).back(), run + "/checkpoints/step_4");
  ASSERT_EQ(wait_for(start(train_args(run, 8, 2) + " --resume", dir / "c.log")), 0) << read_file(dir / "c.log");
  EXPECT_EQ(losses(run).size(), 8u);
}

// A full disk during tokenize: the earlier dataset is untouched, nothing half-written is left.
TEST_F(Faults, FullDiskDuringTokenize) {
  const std::string tok = test::data("tokenizer/openllama_v1_tokenizer.RECONSTRUCTED.model");
  if (!fs::exists(tok)) GTEST_SKIP() << "needs ../shared/data/tokenizer";
  {
    std::ofstream text(dir / "text.txt");
    for (int i = 0; i < 400; ++i) text << "Story " << i << " is a short story about a cat.\n\n";
  }
  const std::string args = "tokenize --tokenizer " + tok + " --input " + dir / "text.txt" +
                           " --separator blank --val-fraction 0.1 --out " + dir / "ds";
  ASSERT_EQ(wait_for(start(args, dir / "t1.log")), 0) << read_file(dir / "t1.log");
  const auto manifest = read_file(dir / "ds/manifest.json");
  const int status = wait_for(start(args, dir / "t2.log", 2000));
  const std::string out = read_file(dir / "t2.log");
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  EXPECT_NE(out.find("bakallm: error: "), std::string::npos) << out;
  EXPECT_EQ(read_file(dir / "ds/manifest.json"), manifest);
  EXPECT_NO_THROW(ShardReader(dir / "ds/train_000000.bin"));
  EXPECT_EQ(leftovers(dir.path.string()), std::vector<std::string>{});
}

// Two Ctrl-C: the second ends the process at once; --resume then continues
// (or starts over when no checkpoint was made) and cleans up what was left.
TEST_F(Faults, DoubleCtrlC) {
  const std::string run = dir / "ctrlc";
  const pid_t pid = start(train_args(run, 100000, 50), dir / "d.log");
  for (int i = 0; i < 600 && losses(run).size() < 3; ++i) usleep(50000);
  ASSERT_GE(losses(run).size(), 3u) << read_file(dir / "d.log");
  kill(pid, SIGINT);
  kill(pid, SIGINT);
  const int status = wait_for(pid);
  EXPECT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0));
  ASSERT_EQ(wait_for(start(train_args(run, 4, 2) + " --resume", dir / "e.log")), 0) << read_file(dir / "e.log");
  EXPECT_EQ(leftovers(run), std::vector<std::string>{});
  EXPECT_FALSE(list_checkpoints(run).empty());
}

// A command never deletes or overwrites what it did not write.
TEST_F(Faults, NothingForeignIsOverwritten) {
  auto expect_refused = [](const test::CliRun& r, const std::string& words) {
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_NE(r.out.find(words), std::string::npos) << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  };
  fs::create_directories(dir / "precious/sub");
  std::ofstream(dir / "precious/thesis.txt") << "years of work";
  for (const std::string& out : {dir / "precious", dir / "precious/"}) {
    expect_refused(test::run_cli("init --preset tiny --seed 0 --out " + out), "thesis.txt");
    expect_refused(test::run_cli("convert --from " + test::fixture("tiny_proto_f32.pt") + " --config " +
                                 test::golden("tiny.config.json") + " --out " + out),
                   "thesis.txt");
  }
  EXPECT_EQ(read_file(dir / "precious/thesis.txt"), "years of work");
  EXPECT_TRUE(fs::is_directory(dir / "precious/sub"));
  // A model directory is ours to replace; a trailing slash names the same directory.
  ASSERT_EQ(test::run_cli("init --config " + dir / "c.json" + " --seed 0 --out " + dir / "m/").status, 0);
  ASSERT_EQ(test::run_cli("init --config " + dir / "c.json" + " --seed 1 --out " + dir / "m").status, 0);
  EXPECT_EQ(leftovers(dir.path.string()), std::vector<std::string>{});
  EXPECT_FALSE(fs::exists(dir / "m/.tmp"));
  // A run directory is continued with --resume, never restarted on top of itself.
  const std::string run = dir / "rr";
  ASSERT_EQ(wait_for(start(train_args(run, 10, 2), dir / "f.log")), 0) << read_file(dir / "f.log");
  const auto metrics = read_file(run + "/metrics.jsonl");
  const auto config = read_file(run + "/train_config.json");
  expect_refused(test::run_cli(train_args(run, 4, 1, /*seed=*/9)), "--resume");
  EXPECT_EQ(read_file(run + "/metrics.jsonl"), metrics);
  EXPECT_EQ(read_file(run + "/train_config.json"), config);
  EXPECT_EQ(list_checkpoints(run).size(), 2u);
  // Not a SentencePiece model: refused before anything is written.
  expect_refused(test::run_cli("init --preset tiny --seed 0 --tokenizer /etc/passwd --out " + dir / "p"),
                 "not a SentencePiece model");
  EXPECT_FALSE(fs::exists(dir / "p"));
}

// The smaller cases: each a one-line error naming the file or option, exit 1, nothing written.
TEST_F(Faults, SmallMistakesAreNamed) {
  auto expect_error = [](const test::CliRun& r, const std::string& words) {
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("bakallm: error: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(words), std::string::npos) << r.out;
  };
  ASSERT_EQ(test::run_cli("init --config " + dir / "c.json" + " --seed 0 --out " + dir / "m").status, 0);
  expect_error(test::run_cli("generate --model " + dir / "m" + " --prompt-ids 1,2 --temperature inf"),
               "--temperature must be a finite number");
  // Shards whose documents are single tokens: nothing to score, no database left behind.
  write_shard(dir / "ones.bin", std::vector<uint32_t>{1, 1, 1});
  expect_error(test::run_cli("eval --model " + dir / "m" + " --data " + dir / "ones.bin" + " --record " + dir / "r.db"),
               "ones.bin: no token to score");
  EXPECT_FALSE(fs::exists(dir / "r.db"));
  // A manifest that is JSON but not a manifest; a checkpoint whose rng file is another file.
  fs::create_directories(dir / "bad");
  std::ofstream(dir / "bad/manifest.json") << R"({"train_shards": 3})";
  expect_error(test::run_cli("train --config " + dir / "c.json" + " --data " + dir / "bad --out " + dir / "r1"),
               "bad/manifest.json: not a bakallm manifest");
  const std::string run = dir / "r2";
  ASSERT_EQ(wait_for(start(train_args(run, 2, 2), dir / "g.log")), 0) << read_file(dir / "g.log");
  fs::copy_file(run + "/checkpoints/step_2/stream.safetensors", run + "/checkpoints/step_2/rng.safetensors",
                fs::copy_options::overwrite_existing);
  expect_error(test::run_cli(train_args(run, 4, 2) + " --resume"), "rng.safetensors: holds no 'cpu' generator state");
  // spm_train's own reason, not "unrecoverable error".
  {
    std::ofstream text(dir / "t.txt");
    for (int i = 0; i < 200; ++i) text << "Line " << i << " of some text, with words and numbers " << i * 7 << ".\n";
  }
  expect_error(test::run_cli("tokenizer train --input " + dir / "t.txt" + " --vocab 260 --out " + dir / "t.model"),
               "Vocabulary size is smaller than required_chars");
  EXPECT_FALSE(fs::exists(dir / "t.model"));
}

// Ids beyond the vocabulary are found before the first step, by file and position.
TEST_F(Faults, OutOfVocabularyIdsNamedBeforeTraining) {
  std::vector<uint32_t> bad(40, 5);
  bad[0] = 1;
  bad[17] = 64;  // the model's vocabulary is 64
  write_shard(data + "/train_000000.bin", bad);
  auto r = test::run_cli(train_args(dir / "oov", 3));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("train_000000.bin: token 17 is 64, outside the model's vocabulary of 64"), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir / "oov/metrics.jsonl"));
}

// Sizes the machine cannot hold are refused at once, naming the file and the field.
TEST_F(Faults, AbsurdSizesAreRefusedBeforeAllocating) {
  for (const auto& [field, value] : std::vector<std::pair<std::string, std::string>>{
           {"num_layers", "100000000"}, {"hidden_dim", "1000000000"}, {"window_size", "100000000"}}) {
    std::ofstream(dir / "big.json") << R"({"hidden_dim": 32, "num_layers": 2, "num_memory_tokens": 2,
                                            "window_size": 8, "vocab_size": 64, ")"
                                     << field << "\": " << value << "}";
    auto r = test::run_cli("init --config " + dir / "big.json" + " --seed 0 --out " + dir / "big");
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.out.find("big.json: " + field + " is too large"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(dir / "big"));
  }
}

}  // namespace
}  // namespace bakallm
