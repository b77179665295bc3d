// Data parallelism over c10d (Gloo), with real processes on loopback:
// N ranks x batch b give the losses of one process x batch N·b (dropout,
// accumulation and clipping on); checkpoints resume exactly with the same
// or another world size holding the same rows, and continue with other rows;
// a rank killed or hung, a port in use, nobody at the rendezvous, and ranks
// given different world sizes or options: one line naming the rank or the
// address, non-zero exit, nothing half-written; eval split between ranks
// equals one process.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "model/baka_lm.h"
#include "model/state.h"
#include "ops/dropout.h"
#include "process.h"
#include "run_cli.h"
#include "small_config.h"
#include "train/checkpoint.h"
#include "train/train_fixture.h"
#include "util/clock.h"

namespace bakallm {
namespace {

namespace fs = std::filesystem;
using test::leftovers;
using test::read_file;
using test::run_cli;
using test::start;
using test::wait_for;

// A port free now on 127.0.0.1 (held by LISTEN_FD while it is >= 0).
int free_port(int* listen_fd = nullptr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  if (listen_fd) {
    ::listen(fd, 4);
    *listen_fd = fd;
  } else {
    ::close(fd);
  }
  return ntohs(a.sin_port);
}

std::string rank_env(int rank, int world, int port) {
  return "RANK=" + std::to_string(rank) + " WORLD_SIZE=" + std::to_string(world) + " LOCAL_RANK=" +
         std::to_string(rank) + " LOCAL_WORLD_SIZE=" + std::to_string(world) + " MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
         std::to_string(port);
}

// Exit code of a status from wait_for.
int code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

class DataParallel : public CliTrainRun {
 protected:
  // Options every rank is given; --batch is per rank.
  std::string train_args(const std::string& run, int64_t batch, int64_t steps = 12, int64_t checkpoint_every = 6) {
    return "train --config " + dir / "c.json" + " --data " + data + " --out " + run + " --steps " +
           std::to_string(steps) + " --batch " + std::to_string(batch) +
           " --checkpoint-every " + std::to_string(checkpoint_every) +
           " --grad-accum 2 --clip 0.3 --lr 3e-3 --warmup 3 --keep 3 --sample-tokens 0 "
           "--eval-every 6 --dtype float32 --seed 5";
  }
  std::vector<nlohmann::json> records(const std::string& run, const char* field) {
    std::vector<nlohmann::json> out;
    std::ifstream in(run + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j.contains(field)) out.push_back(j);
    }
    return out;
  }
  void expect_same_run(const std::string& a, const std::string& b, size_t first_step = 0) {
    for (const char* field : {"loss", "val_loss"}) {
      auto x = records(a, field), y = records(b, field);
      ASSERT_EQ(x.size(), y.size()) << field;
      ASSERT_FALSE(x.empty());
      for (size_t i = first_step; i < x.size(); ++i) {
        EXPECT_EQ(x[i]["step"], y[i]["step"]);
        const double u = x[i][field].get<double>(), v = y[i][field].get<double>();
        EXPECT_NEAR(u, v, 1e-5 * std::abs(u)) << field << " at step " << x[i]["step"];
        if (std::string(field) == "loss") {
          EXPECT_NEAR(x[i]["grad_norm"].get<double>(), y[i]["grad_norm"].get<double>(),
                      1e-5 * x[i]["grad_norm"].get<double>());
          EXPECT_EQ(x[i]["tokens"], y[i]["tokens"]);
        }
      }
    }
  }
  // `bakallm launch --nproc N -- ARGS`, output kept.
  test::CliRun launch(int n, const std::string& args) {
    return run_cli("launch --nproc " + std::to_string(n) + " --master-port 0 --grace 5 -- " + args);
  }
};

// Global row i of N ranks reads what row i of one process with all N·b rows
// reads; the concatenated rank batches equal the whole batch.
TEST_F(DataParallel, RanksDealTheRowsOfOneBatch) {
  const auto config = test::small_config(32, 2, 2, 64, 8, 64);
  LoaderOptions lo;
  lo.shards = {data + "/train_000000.bin"};
  lo.rows = 6;
  lo.windows_per_step = 2;
  Loader whole(lo, config);
  std::vector<Loader> ranks;
  for (int r = 0; r < 3; ++r) {
    lo.first_row = 2 * r;
    lo.local_rows = 2;
    ranks.emplace_back(lo, config);
  }
  for (int step = 0; step < 20; ++step) {  // past the end of the data: the epochs turn alike
    const auto w = whole.next();
    std::vector<torch::Tensor> ids, targets, resets;
    int64_t tokens = 0;
    for (auto& r : ranks) {
      const auto b = r.next();
      ids.push_back(b.ids);
      targets.push_back(b.targets);
      resets.push_back(b.resets);
      tokens += b.tokens;
      EXPECT_EQ(b.global_tokens, w.tokens);
      EXPECT_DOUBLE_EQ(b.padding, w.padding);
    }
    EXPECT_TRUE(torch::equal(torch::cat(ids), w.ids)) << "step " << step;
    EXPECT_TRUE(torch::equal(torch::cat(targets), w.targets));
    EXPECT_TRUE(torch::equal(torch::cat(resets), w.resets));
    EXPECT_EQ(tokens, w.tokens);
  }
  EXPECT_EQ(ranks[1].state(), whole.state());
}

// Dropout on a rank's rows drops what it drops on those rows of the whole batch.
TEST(DataParallelDropout, ARanksRowsDropAsInTheWholeBatch) {
  const auto x = torch::randn({6, 5, 7});  // 35 elements a row: blocks of 4 straddle rows
  torch::manual_seed(11);
  const auto whole = hashed_dropout(x, 0.3, true);
  for (int64_t first : {1, 2, 3}) {
    torch::manual_seed(11);  // each rank draws the same seed
    set_dropout_first_row(first);
    const auto part = hashed_dropout(x.narrow(0, first, 2), 0.3, true);
    set_dropout_first_row(0);
    EXPECT_TRUE(torch::equal(part, whole.narrow(0, first, 2))) << "rows from " << first;
  }
}

// A checkpoint's stream holds every rank's rows: a rank takes its own; another
// number of rows keeps the first ones and starts the rest afresh.
TEST(DataParallelState, RowsAndResize) {
  auto model = make_model(test::small_config(16, 2, 2, 32, 4, 20), 0);
  model->eval();
  auto out = model->forward(torch::randint(3, 20, {4, 8}), State{});
  const State& s = out.state;
  const auto part = s.rows(1, 2);
  EXPECT_TRUE(torch::equal(part.memory, s.memory.narrow(0, 1, 2)));
  EXPECT_TRUE(torch::equal(part.layers[1].k, s.layers[1].k.narrow(0, 1, 2)));
  EXPECT_EQ(part.row_seen.size(0), 2);
  const auto grown = s.resized(6);
  EXPECT_TRUE(torch::equal(grown.memory.narrow(0, 0, 4), s.memory));
  EXPECT_TRUE(torch::equal(grown.fresh_rows, torch::tensor({false, false, false, false, true, true})));
  EXPECT_EQ(grown.row_seen[5].item<int64_t>(), 0);
  // A grown row reads as a fresh stream: its logits equal a fresh one's.
  const auto ids = torch::randint(3, 20, {6, 4});
  const auto next = model->forward(ids, grown).logits;
  const auto fresh = model->forward(ids.narrow(0, 5, 1), State{}).logits;
  EXPECT_TRUE(torch::allclose(next.narrow(0, 5, 1), fresh, 1e-5, 1e-6));
  EXPECT_EQ(s.resized(3).memory.size(0), 3);
}

// The test: 2 ranks x 2 rows = 1 process x 4 rows, over 12 steps
// with dropout, accumulation (2) and clipping; validation too.
TEST_F(DataParallel, TwoRanksEqualOneProcessWithTheGlobalBatch) {
  const auto one = run_cli(train_args(dir / "one", 4));
  ASSERT_EQ(one.status, 0) << one.out;
  const auto two = launch(2, train_args(dir / "two", 2));
  ASSERT_EQ(two.status, 0) << two.out;
  expect_same_run(dir / "one", dir / "two");
  EXPECT_NE(two.out.find("data parallel: 2 ranks x 2 rows (global batch 4)"), std::string::npos) << two.out;
  EXPECT_NE(two.out.find("% hidden behind the backward"), std::string::npos) << two.out;
  // Rank 0 alone wrote the run; its checkpoints are those of one process.
  EXPECT_EQ(nlohmann::json::parse(read_file(dir / "two/checkpoints/step_12/train_state.json"))["world_size"], 2);
  EXPECT_EQ(read_file(dir / "one/checkpoints/step_12/model.safetensors").size(),
            read_file(dir / "two/checkpoints/step_12/model.safetensors").size());
  EXPECT_TRUE(leftovers(dir / "two").empty());
  // The job's result is printed once.
  size_t finished = 0;
  for (size_t at = 0; (at = two.out.find("finished at step", at)) != std::string::npos; ++at) ++finished;
  EXPECT_EQ(finished, 1u) << two.out;
}

// Two "machines" (launch --nnodes 2, one rank each, node 0 hosting the
// rendezvous) are the same job as two local ranks: one process's losses.
TEST_F(DataParallel, TwoNodesOfOneRankEach) {
  ASSERT_EQ(run_cli(train_args(dir / "one", 4)).status, 0);
  const int port = free_port();
  pid_t node[2];
  for (int n = 0; n < 2; ++n)
    node[n] = start("launch --nproc 1 --threads-per-rank 1 --nnodes 2 --node-rank " + std::to_string(n) +
                        " --master-addr 127.0.0.1 --master-port " + std::to_string(port) + " -- " +
                        train_args(dir / "nodes", 2),
                    dir / ("node" + std::to_string(n) + ".log"));
  for (int n = 0; n < 2; ++n) EXPECT_EQ(code(wait_for(node[n])), 0) << read_file(dir / ("node" + std::to_string(n) + ".log"));
  expect_same_run(dir / "one", dir / "nodes");
}

// From a 2-rank checkpoint: 2 ranks again, or 1 process with the same 4
// rows, continue exactly; 3 ranks x 2 rows continue with 4 rows' streams and
// 2 new ones, and say so; another --batch with the same ranks is refused.
TEST_F(DataParallel, ResumeWithTheSameOrAnotherWorldSize) {
  ASSERT_EQ(run_cli(train_args(dir / "whole", 4)).status, 0);
  const auto first = launch(2, train_args(dir / "part", 2));
  ASSERT_EQ(first.status, 0) << first.out;
  fs::remove_all(dir / "part/checkpoints/step_12");  // as if stopped at step 6 of 12
  for (const char* copy : {"two", "one", "three", "other"}) fs::copy(dir / "part", dir / copy, fs::copy_options::recursive);
  auto two = launch(2, train_args(dir / "two", 2) + " --resume");
  ASSERT_EQ(two.status, 0) << two.out;
  expect_same_run(dir / "whole", dir / "two");
  auto one = run_cli(train_args(dir / "one", 4) + " --resume");
  ASSERT_EQ(one.status, 0) << one.out;
  EXPECT_NE(one.out.find("2 rank(s) x 2 rows, this run has 1 x 4: the same rows, re-dealt: exact"), std::string::npos)
      << one.out;
  expect_same_run(dir / "whole", dir / "one");
  auto three = launch(3, train_args(dir / "three", 2) + " --resume");
  ASSERT_EQ(three.status, 0) << three.out;
  EXPECT_NE(three.out.find("4 of 6 rows continue their streams, the others start new documents"), std::string::npos)
      << three.out;
  EXPECT_EQ(records(dir / "three", "loss").size(), 12u);
  auto other = launch(2, train_args(dir / "other", 3) + " --resume");
  EXPECT_NE(other.status, 0);
  EXPECT_NE(other.out.find("give the same --batch (times ranks) to resume"), std::string::npos) << other.out;
}

// kill -9 of rank 1 mid-run: rank 0 stops within seconds naming rank 1; the
// checkpoints are whole. A hung rank (SIGSTOP): the same after --dist-timeout.
// Rank 0 killed: rank 1 names it.
TEST_F(DataParallel, ARankThatDiesOrHangsIsNamed) {
  struct Case {
    int victim, signal;
  };
  for (const Case c : {Case{1, SIGKILL}, Case{1, SIGSTOP}, Case{0, SIGKILL}}) {
    SCOPED_TRACE("rank " + std::to_string(c.victim) + " signal " + std::to_string(c.signal));
    const auto run = dir / ("run" + std::to_string(c.victim) + "_" + std::to_string(c.signal));
    const int port = free_port();
    const auto args = train_args(run, 2, 100000, 3) + " --dist-timeout 4";
    pid_t pid[2];
    for (int r = 0; r < 2; ++r) pid[r] = start(args, run + ".log" + std::to_string(r), 0, rank_env(r, 2, port));
    const auto metrics = run + "/metrics.jsonl";
    for (int i = 0; i < 600 && read_file(metrics).size() < 2000; ++i)  // a few steps in
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ASSERT_GT(read_file(metrics).size(), 0u) << read_file(run + ".log0") << read_file(run + ".log1");
    ::kill(pid[c.victim], c.signal);
    const auto t0 = Clock::now();
    const int survivor = 1 - c.victim;
    const int status = wait_for(pid[survivor]);
    const double seconds = seconds_since(t0);
    if (c.signal == SIGSTOP) ::kill(pid[c.victim], SIGKILL);
    wait_for(pid[c.victim]);
    const auto log = read_file(run + ".log" + std::to_string(survivor));
    EXPECT_EQ(code(status), 1) << log;
    EXPECT_LT(seconds, c.signal == SIGSTOP ? 15 : 8) << log;
    const std::string named = c.victim == 1 ? "rank 1 stopped answering" : "rank 0 (the host of the rendezvous";
    EXPECT_NE(log.find(named), std::string::npos) << log;
    // One line: the error, nothing after it.
    const auto last = log.substr(log.rfind("bakallm: error:"));
    EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << last;
    EXPECT_TRUE(leftovers(run).empty() || c.victim == 0);  // a killed rank 0 may leave a temporary: the next start removes it
    for (const auto& ckpt : list_checkpoints(run))
      EXPECT_TRUE(fs::exists(ckpt + "/train_state.json") && fs::exists(ckpt + "/stream.safetensors")) << ckpt;
  }
}

// `launch` exits non-zero, naming the rank, when one fails.
TEST_F(DataParallel, LaunchReportsAFailedRank) {
  // Rank 1's data lacks a shard: it fails at start; both stop, rank 0 says which.
  const auto r = launch(2, "train --config " + dir / "c.json" + " --data " + dir / "nowhere" + " --out " + dir / "x" +
                               " --steps 2 --batch 1 --dtype float32");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("manifest.json: missing"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("launch: rank "), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir / "x"));
  const auto bad = run_cli("launch --nproc 2 -- generate --model m");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.out.find("launch: runs `train ...` or `eval ...`"), std::string::npos) << bad.out;
}

// Ctrl-C to the launcher: every rank stops at the same step with one checkpoint, exit 0.
TEST_F(DataParallel, CtrlCStopsEveryRankAtOneStep) {
  const auto run = dir / "ctrl_c";
  const pid_t pid = start("launch --nproc 2 --master-port 0 -- " + train_args(run, 2, 100000), run + ".log");
  for (int i = 0; i < 600 && read_file(run + "/metrics.jsonl").size() < 1000; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ::kill(pid, SIGINT);
  const int status = wait_for(pid);
  const auto log = read_file(run + ".log");
  EXPECT_EQ(code(status), 0) << log;
  EXPECT_NE(log.find("stopped at step"), std::string::npos) << log;
  const auto steps = records(run, "loss");
  ASSERT_FALSE(steps.empty());
  const auto ckpts = list_checkpoints(run);
  ASSERT_FALSE(ckpts.empty());
  EXPECT_EQ(ckpts.back(), run + "/checkpoints/step_" + std::to_string(steps.back()["step"].get<int64_t>()));
  EXPECT_TRUE(leftovers(run).empty());
}

// Rendezvous errors: a port in use, nobody at the rendezvous, ranks given
// different world sizes or options. One line each, quickly, nothing written.
TEST_F(DataParallel, RendezvousMistakesAreNamed) {
  int held = -1;
  const int busy = free_port(&held);
  auto rank = [&](int rank, int world, int port, const std::string& extra = "") {
    return start(train_args(dir / "b", 2) + " --dist-timeout 3" + extra, dir / ("r" + std::to_string(rank) + ".log"),
                 0, rank_env(rank, world, port));
  };
  EXPECT_EQ(code(wait_for(rank(0, 2, busy))), 1);
  EXPECT_NE(read_file(dir / "r0.log").find("cannot host the rendezvous on port " + std::to_string(busy)),
            std::string::npos)
      << read_file(dir / "r0.log");
  ::close(held);
  const int nobody = free_port();
  EXPECT_EQ(code(wait_for(rank(1, 2, nobody))), 1);
  EXPECT_NE(read_file(dir / "r1.log").find("cannot reach the rendezvous at 127.0.0.1:" + std::to_string(nobody)),
            std::string::npos)
      << read_file(dir / "r1.log");
  int port = free_port();
  auto a = rank(0, 2, port), b = rank(1, 3, port);
  EXPECT_EQ(code(wait_for(a)), 1);
  EXPECT_EQ(code(wait_for(b)), 1);
  EXPECT_NE(read_file(dir / "r0.log").find("WORLD_SIZE is 2 here (rank 0) but 3 on rank 1"), std::string::npos)
      << read_file(dir / "r0.log");
  EXPECT_NE(read_file(dir / "r1.log").find("WORLD_SIZE is 3 here (rank 1) but 2 on rank 0"), std::string::npos);
  port = free_port();
  a = rank(0, 2, port);
  b = rank(1, 2, port, " --min-lr-ratio 0.2");
  EXPECT_EQ(code(wait_for(a)), 1);
  EXPECT_EQ(code(wait_for(b)), 1);
  EXPECT_NE(read_file(dir / "r0.log").find("rank 1 was given --min-lr-ratio 0.2, rank 0 0.1"), std::string::npos)
      << read_file(dir / "r0.log");
  EXPECT_FALSE(fs::exists(dir / "b"));
}

// eval with 2 ranks: the documents split, the sums reduced: one process's figures.
TEST_F(DataParallel, EvalSplitsDocumentsExactly) {
  ASSERT_EQ(run_cli(train_args(dir / "m", 2, 2)).status, 0);
  const auto model = dir / "m/checkpoints/step_2";
  for (const std::string protocol : {"stream", "sliding --ctx 6"}) {
    const std::string args = "eval --model " + model + " --data " + data + "/train_000000.bin --json --protocol " + protocol;
    const auto one = run_cli(args), two = launch(2, args);
    ASSERT_EQ(one.status, 0) << one.out;
    ASSERT_EQ(two.status, 0) << two.out;
    auto json_of = [](const std::string& out) { return nlohmann::json::parse(out.substr(out.find('{'))); };
    const auto x = json_of(one.out), y = json_of(two.out);
    EXPECT_EQ(x["tokens"], y["tokens"]);
    EXPECT_EQ(x["documents"], y["documents"]);
    EXPECT_NEAR(x["loss"].get<double>(), y["loss"].get<double>(), 1e-9 * x["loss"].get<double>()) << protocol;
  }
  const auto capped = launch(2, "eval --model " + model + " --data " + data + "/train_000000.bin --max-tokens 50");
  EXPECT_NE(capped.status, 0);
  EXPECT_NE(capped.out.find("--max-tokens cannot be split between ranks"), std::string::npos) << capped.out;
}

}  // namespace
}  // namespace bakallm
