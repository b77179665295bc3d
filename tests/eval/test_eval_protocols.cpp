// Evaluation protocols against direct computations, the results database, and bench's JSON.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "bench/benchmark.h"
#include "eval/evaluator.h"
#include "eval/results_db.h"
#include "ops/compute_limit.h"
#include "ops/cpu.h"
#include "ops/onednn.h"
#include "paths.h"
#include "run_cli.h"
#include "small_config.h"
#include "util/error.h"

namespace bakallm {
namespace {

Config small() { return test::small_config(16, 2, 2, 32, 4, 30); }

// −log p(doc[t] | doc[begin..t−1]) from one fresh forward over doc[begin, end).
double direct(BakaLM& model, const torch::Tensor& doc, int64_t begin, int64_t end, int64_t t) {
  torch::NoGradGuard no_grad;
  auto logits = model(doc.narrow(0, begin, end - begin).unsqueeze(0)).logits[0];
  return -torch::log_softmax(logits[t - 1 - begin], 0)[doc[t].item<int64_t>()].item<double>();
}

TEST(EvalProtocols, SlidingScoresEachTokenOnceWithItsWindow) {
  auto model = make_model(small(), 31);
  model->eval();
  torch::manual_seed(3);
  auto doc = torch::randint(0, 30, {15}, torch::kLong);
  EvalOptions o;
  o.protocol = EvalProtocol::kSliding;
  o.context = 6;  // windows [0,6) [3,9) [6,12) [9,15): targets 1-5, 6-8, 9-11, 12-14
  auto losses = token_losses(model, doc, o);
  ASSERT_EQ(losses.size(0), 14);
  for (int64_t t = 1; t < 15; ++t) {
    const int64_t begin = t < 6 ? 0 : 3 * ((t - 6) / 3 + 1);
    const double expect = direct(model, doc, begin, std::min<int64_t>(begin + 6, 15), t);
    EXPECT_NEAR(losses[t - 1].item<double>(), expect, 1e-5 * std::abs(expect) + 1e-6) << "token " << t;
  }
}

TEST(EvalProtocols, StreamMatchesOneForwardAndWindowAverage) {
  auto model = make_model(small(), 32);
  model->eval();
  torch::manual_seed(4);
  auto doc = torch::randint(0, 30, {11}, torch::kLong);
  EvalOptions o;
  auto losses = token_losses(model, doc, o);
  for (int64_t t = 1; t < 11; ++t)
    EXPECT_NEAR(losses[t - 1].item<double>(), direct(model, doc, 0, 11, t), 1e-5) << t;
  auto s = evaluate_document(model, doc, o);
  // Windows of W=4 targets: [1-4], [5-8], [9-10].
  const double w = (losses.narrow(0, 0, 4).mean().item<double>() + losses.narrow(0, 4, 4).mean().item<double>() +
                    losses.narrow(0, 8, 2).mean().item<double>()) / 3;
  EXPECT_EQ(s.windows, 3);
  EXPECT_NEAR(s.window_loss(), w, 1e-6);
  EXPECT_NEAR(s.loss(), losses.mean().item<double>(), 1e-6);
}

// The author's protocol (bench_baka.py), computed here window by window from
// fresh forwards: documents shorter and longer than the window, several
// window sizes (odd too: later windows score their last ctx/2 tokens).
TEST(EvalProtocols, AuthorIsTheMeanOverWindowsOfFreshCalls) {
  auto model = make_model(small(), 33);
  model->eval();
  torch::manual_seed(5);
  std::vector<torch::Tensor> docs = {torch::randint(0, 30, {15}, torch::kLong), torch::randint(0, 30, {4}, torch::kLong),
                                     torch::randint(0, 30, {23}, torch::kLong), torch::randint(0, 30, {1}, torch::kLong)};
  for (int64_t ctx : {6, 7, 8, 64}) {
    double sum = 0;
    int64_t windows = 0, tokens = 0;
    for (const auto& doc : docs) {
      const int64_t n = doc.size(0), half = ctx / 2;
      for (int64_t begin = 0;; begin += half) {
        const int64_t end = std::min(begin + ctx, n), first = begin == 0 ? 1 : begin + ctx - half;
        if (first >= end) break;
        double window = 0;
        for (int64_t t = first; t < end; ++t) window += direct(model, doc, begin, end, t);
        sum += window / double(end - first);
        tokens += end - first;
        ++windows;
      }
    }
    EvalOptions o;
    o.protocol = EvalProtocol::kAuthor;
    o.context = ctx;
    size_t i = 0;
    auto s = evaluate_documents(model, [&](torch::Tensor& d) { return i < docs.size() ? (d = docs[i++], true) : false; }, o);
    EXPECT_EQ(s.windows, windows) << "ctx " << ctx;
    EXPECT_EQ(s.tokens, tokens) << "ctx " << ctx;  // each target once
    EXPECT_NEAR(s.loss(), sum / double(windows), 1e-5 * sum / double(windows)) << "ctx " << ctx;
    EXPECT_TRUE(s.window_mean);
  }
}

ResultRow row(double loss, const std::string& bench) {
  ResultRow r;
  r.n_params = 1000;
  r.n_embed_params = 100;
  r.benchmark = bench;
  r.split = "valid";
  r.loss = loss;
  r.ppl = std::exp(loss);
  r.arch = "test";
  r.config_json = "{}";
  r.protocol = "stream";
  r.checkpoint_hash = "x";
  r.tool_version = "t";
  return r;
}

TEST(ResultsDb, SchemaSortingAndFilter) {
  test::TempDir dir;
  record_result(dir / "r.db", row(4.5, "wiki"));
  record_result(dir / "r.db", row(3.5, "wiki"));
  record_result(dir / "r.db", row(2.0, "stories"));
  auto all = read_results(dir / "r.db");
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].loss, 2.0);
  EXPECT_EQ(all[2].loss, 4.5);
  EXPECT_FALSE(all[0].created_at.empty());
  auto wiki = read_results(dir / "r.db", "wiki");
  ASSERT_EQ(wiki.size(), 2u);
  EXPECT_EQ(wiki[0].loss, 3.5);
  EXPECT_THROW(read_results(dir / "absent.db"), Error);
  std::ofstream(dir / "junk.db") << "not sqlite";
  EXPECT_THROW(record_result(dir / "junk.db", row(1, "x")), Error);
}

TEST(ResultsDb, ConcurrentWritersFromTwoProcesses) {
  test::TempDir dir;
  const std::string db = dir / "r.db";
  std::array<pid_t, 2> kids{};
  for (int k = 0; k < 2; ++k) {
    kids[k] = fork();
    if (kids[k] == 0) {
      try {
        for (int i = 0; i < 25; ++i) record_result(db, row(k + i / 100.0, "p" + std::to_string(k)));
      } catch (...) {
        _exit(1);
      }
      _exit(0);
    }
  }
  for (pid_t pid : kids) {
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  EXPECT_EQ(read_results(db).size(), 50u);
  EXPECT_EQ(read_results(db, "p1").size(), 25u);
}

std::string run(const std::string& args, int* status) {
  auto r = test::run_cli(args);
  *status = r.status;
  return r.out;
}

TEST(EvalCli, TextSlidingRecordAndResults) {
  const auto tok = test::data("tokenizer/openllama_v1_tokenizer.RECONSTRUCTED.model");
  if (!std::filesystem::exists(tok)) GTEST_SKIP() << "needs ../shared/data/tokenizer";
  test::TempDir dir;
  std::ofstream(dir / "c.json") << R"({"hidden_dim": 16, "num_layers": 1, "num_memory_tokens": 2, "window_size": 8, "vocab_size": 32000})";
  int status = 0;
  run("init --config " + dir / "c.json" + " --seed 1 --out " + dir / "m --tokenizer " + tok, &status);
  ASSERT_EQ(status, 0);
  std::ofstream(dir / "wiki.valid.jsonl") << "{\"text\": \"The first article is about lobsters and the sea.\"}\n"
                                             "{\"text\": \"A second article, on Norway, the country of fjords.\"}\n";
  auto out = run("eval --model " + dir / "m" + " --text " + dir / "wiki.valid.jsonl" + " --json --record " + dir / "r.db", &status);
  ASSERT_EQ(status, 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["documents"], 2);
  EXPECT_EQ(j["protocol"], "stream");
  out = run("eval --model " + dir / "m" + " --text " + dir / "wiki.valid.jsonl" + " --protocol sliding --ctx 6 --json --record " +
                dir / "r.db",
            &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out)["tokens"], j["tokens"]);  // same tokens scored once each
  // The author's protocol: his default window (a whole article per call), the
  // mean over windows as `loss`, recorded with its n_ctx; --bos none drops
  // one token (and one target) per document.
  out = run("eval --model " + dir / "m" + " --text " + dir / "wiki.valid.jsonl" + " --protocol author --json --record " +
                dir / "r.db",
            &status);
  ASSERT_EQ(status, 0) << out;
  auto author = nlohmann::json::parse(out);
  EXPECT_EQ(author["protocol"], "author");
  EXPECT_EQ(author["context"], 655360);
  EXPECT_EQ(author["windows"], 2);  // one per article
  EXPECT_EQ(author["tokens"], j["tokens"]);
  EXPECT_NE(author["loss"], author["token_loss"]);  // the mean of two article means, not of tokens
  out = run("eval --model " + dir / "m" + " --text " + dir / "wiki.valid.jsonl" + " --protocol author --bos none --json", &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out)["tokens"].get<int64_t>(), j["tokens"].get<int64_t>() - 2);
  auto rows = read_results(dir / "r.db");
  ASSERT_EQ(rows.size(), 3u);
  bool author_row = false;
  for (const auto& r : rows) author_row = author_row || (r.protocol == "author" && r.context == 655360);
  EXPECT_TRUE(author_row);
  EXPECT_EQ(rows[0].benchmark, "wiki.valid.jsonl");
  EXPECT_EQ(rows[0].split, "valid");
  EXPECT_EQ(rows[0].checkpoint_hash.rfind("fnv1a64:", 0), 0u);
  auto table = run("results " + dir / "r.db", &status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(table.find("sliding"), std::string::npos) << table;
  EXPECT_NE(table.find("wiki.valid.jsonl"), std::string::npos) << table;
  // Bad input: sliding without --ctx, a .zst that is not zstd, a read-only database.
  EXPECT_NE(run("eval --model " + dir / "m" + " --text " + dir / "wiki.valid.jsonl --protocol sliding", &status).find("--ctx"),
            std::string::npos);
  std::ofstream(dir / "fake.jsonl.zst") << "plain text";
  EXPECT_NE(run("eval --model " + dir / "m" + " --text " + dir / "fake.jsonl.zst", &status).find("fake.jsonl.zst: bad zstd data"),
            std::string::npos);
  EXPECT_NE(status, 0);
  std::filesystem::permissions(dir / "r.db", std::filesystem::perms::owner_read, std::filesystem::perm_options::replace);
  if (::geteuid() != 0) {  // root writes read-only files anyway
    run("eval --model " + dir / "m" + " --text " + dir / "wiki.valid.jsonl --record " + dir / "r.db", &status);
    EXPECT_NE(status, 0);
  }
}

// bench's output with ARGS on a one-layer model (D 32, W 16, V 64), its exit status into STATUS.
std::string bench_output(const std::string& args, int* status) {
  test::TempDir dir;
  std::ofstream(dir / "c.json") << R"({"hidden_dim": 32, "num_layers": 1, "num_memory_tokens": 2, "window_size": 16, "vocab_size": 64})";
  run("init --config " + dir / "c.json" + " --seed 1 --out " + dir / "m", status);
  EXPECT_EQ(*status, 0);
  return run("bench --model " + dir / "m" + " " + args, status);
}

// bench's JSON on that model with ARGS.
nlohmann::json bench_json(const std::string& args) {
  int status = 0;
  auto out = bench_output("--json " + args, &status);
  EXPECT_EQ(status, 0) << out;
  return nlohmann::json::parse(out);
}

TEST(BenchCli, JsonShape) {
  auto j = bench_json("--decode-windows 1 2 --decode-tokens 4 --train-steps 1 --attention-windows 16 64");
  for (const char* key : {"matmul_flops_per_s", "train", "forward_tokens_per_s", "decode", "peak_rss_bytes", "weight_bytes"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_GT(j["train"]["float32"]["tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["train"]["bfloat16"]["mfu"].get<double>(), 0);
  // the arithmetic's limit on registers: float32 FMA where the CPU has AVX2 or AVX-512, AMX tiles where it has AMX
  const auto limits = j.value("compute_flops_per_s", nlohmann::json::object());
  EXPECT_EQ(limits.contains("float32"), cpu_isa() != Isa::kPortable);
  EXPECT_EQ(limits.contains("bfloat16"), amx_tiles_available());
  for (const auto& [k, v] : limits.items()) {
    EXPECT_GT(v.get<double>(), 0) << k;
    // training's FLOP/s against it
    EXPECT_NEAR(j["train"][k]["mfu_of_limit"].get<double>(), j["train"][k]["flops_per_s"].get<double>() / v.get<double>(),
                1e-12)
        << k;
  }
  if (!limits.contains("bfloat16")) {
    EXPECT_FALSE(j["train"]["bfloat16"].contains("mfu_of_limit"));
  }
  for (const char* dtype : {"float32", "bfloat16"}) {
    const auto& t = j["train"][dtype];
    // MFU against the peak reported beside it
    EXPECT_NEAR(t["mfu"].get<double>(), t["flops_per_s"].get<double>() / j["matmul_flops_per_s"][dtype].get<double>(),
                1e-12)
        << dtype;
    // that peak: the better of the measurements before the steps and after, both kept, and whether they differ by over 30%
    const auto& both = j["matmul_flops_per_s_before_after"][dtype];
    ASSERT_EQ(both.size(), 2u) << dtype;
    const double before = both[0].get<double>(), after = both[1].get<double>();
    EXPECT_GT(std::min(before, after), 0) << dtype;
    EXPECT_EQ(j["matmul_flops_per_s"][dtype].get<double>(), std::max(before, after)) << dtype;
    EXPECT_EQ(t["peak_moved"].get<bool>(), std::max(before, after) > kPeakMoved * std::min(before, after)) << dtype;
    // the product's rate probed before each timed step (1 here) and after the
    // last, and MFU against their mean
    const auto& probes = t["probes_flops_per_s"];
    ASSERT_EQ(probes.size(), 2u) << dtype;
    const double mean_probe = (probes[0].get<double>() + probes[1].get<double>()) / 2;
    EXPECT_GT(std::min(probes[0].get<double>(), probes[1].get<double>()), 0) << dtype;
    EXPECT_NEAR(t["mfu_probed"].get<double>(), t["flops_per_s"].get<double>() / mean_probe,
                1e-9 * t["mfu_probed"].get<double>())
        << dtype;
    // the step split into its products and the rest
    ASSERT_TRUE(t.contains("products_share")) << dtype;
    const double share = t["products_share"].get<double>();
    EXPECT_TRUE(share > 0 && share < 1) << dtype << " " << share;
    // the products' own rate: the step's FLOPs in their share of its time
    EXPECT_NEAR(t["products_flops_per_s"].get<double>(), t["flops_per_s"].get<double>() / share,
                1e-9 * t["products_flops_per_s"].get<double>());
    EXPECT_NEAR(t["products_mfu"].get<double>(), t["mfu"].get<double>() / share, 1e-9 * t["products_mfu"].get<double>());
  }
  ASSERT_EQ(j["decode"].size(), 2u);
  EXPECT_EQ(j["decode"][1]["context_tokens"], 32);
  EXPECT_GT(j["decode"][0]["decode_ms_per_token"].get<double>(), 0);
  // The (upper) median of 4 tokens is at most twice their mean: the two slowest sum to 2x it at least.
  const double median = j["decode"][0]["decode_ms_per_token_median"].get<double>();
  EXPECT_GT(median, 0);
  EXPECT_LE(median, 2 * j["decode"][0]["decode_ms_per_token"].get<double>() * (1 + 1e-9));
  EXPECT_GT(j["read_bytes_per_s"].get<double>(), 0);
  const double others = j["machine"]["background_cpu_share"].get<double>();
  EXPECT_TRUE(others >= 0 && others <= 1) << others;
  EXPECT_FALSE(j["machine"]["cpu_model"].get<std::string>().empty());
  EXPECT_TRUE(j["machine"]["amx"].is_boolean());
  const char* products = !onednn::available() ? "libtorch" : onednn::amx_products() ? "brgemm" : "jit";
  EXPECT_EQ(j["onednn_bfloat16_products"].get<std::string>().rfind(products, 0), 0u) << j["onednn_bfloat16_products"];
  EXPECT_TRUE(j["machine"]["huge_pages"].is_boolean());
  EXPECT_GE(j["read_bytes_per_s"].get<double>(), j["read_bytes_per_s_4k_pages"].get<double>());  // the better of the two
  ASSERT_EQ(j["decode_bfloat16_weights"].size(), 2u);
  EXPECT_EQ(2 * j["decode_weight_bytes"]["bfloat16"].get<int64_t>(), j["decode_weight_bytes"]["float32"].get<int64_t>());
  // A token reads the layer's q, k, v, output gate, MLP gate and EMA gate
  // (D x D), the MLP (3 x D x 4D) and the head (V x D); not the past gates or
  // the solidifier (once a window).
  EXPECT_EQ(j["decode_weight_bytes"]["float32"].get<int64_t>(), 4 * (6 * 32 * 32 + 3 * 32 * 128 + 64 * 32));
  // Keys (2D) and values (D) of the window so far, every layer: more than the previous window's alone.
  for (const auto& d : j["decode"]) {
    EXPECT_GT(d["attended_bytes_per_token"].get<double>(), 4.0 * 3 * 32 * 16) << d;
    EXPECT_GT(d["first_token_ms"].get<double>(), 0) << d;
    // The floor: the weights and keys/values a token reads at the best bandwidth measured up to its run.
    EXPECT_GE(d["read_bytes_per_s"].get<double>(), j["read_bytes_per_s"].get<double>()) << d;
    EXPECT_NEAR(d["floor_ms_per_token"].get<double>(),
                1000 * (j["decode_weight_bytes"]["float32"].get<double>() + d["attended_bytes_per_token"].get<double>()) /
                    d["read_bytes_per_s"].get<double>(),
                1e-9 * d["floor_ms_per_token"].get<double>())
        << d;
  }
  ASSERT_EQ(j["attention_step"].size(), 2u);
  const auto& step = j["attention_step"][1];
  EXPECT_EQ(step["window"], 64);
  EXPECT_EQ(step["weights_bytes_per_layer"], (64 + 6) * 2 * (64 + 6) * 4);  // [T, 2T] float32, T = W + 2M + 2
  for (const char* kernel : {"dense", "blocks"}) {
    EXPECT_GE(step[kernel]["peak_bytes"].get<int64_t>(), 0) << kernel;
    EXPECT_GT(step[kernel]["seconds"].get<double>(), 0) << kernel;
  }
  EXPECT_TRUE(step.contains("saved_bytes"));
}

// --decode-windows 0, as --attention-windows 0: that measurement is left out.
TEST(BenchCli, ZeroWindowsLeaveDecodingOut) {
  auto j = bench_json("--decode-windows 0 --train-steps 1 --attention-windows 0");
  EXPECT_FALSE(j.contains("decode"));
  EXPECT_FALSE(j.contains("decode_bfloat16_weights"));
  EXPECT_FALSE(j.contains("attention_step"));
  EXPECT_GT(j["train"]["float32"]["tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["peak_rss_bytes"].get<double>(), 0);
  int status = 0;
  auto out = run("bench --decode-tokens 0", &status);
  EXPECT_NE(status, 0);
  // one plain line, not CLI11's range up to DBL_MAX
  EXPECT_NE(out.find("--decode-tokens: must be greater than 0, got 0"), std::string::npos) << out;
  EXPECT_EQ(out.find("1797693"), std::string::npos) << out;
}

// No timed steps: the peak alone, no training figures (they had printed as NaN), and in text no "nan".
TEST(BenchCli, ZeroTrainStepsMeasureThePeakAlone) {
  auto j = bench_json("--decode-windows 0 --train-steps 0 --attention-windows 0");
  EXPECT_FALSE(j.contains("train"));
  EXPECT_GT(j["matmul_flops_per_s"]["float32"].get<double>(), 0);
  EXPECT_EQ(j["matmul_flops_per_s_before_after"]["float32"].size(), 2u);
  int status = 0;
  auto text = bench_output("--decode-windows 0 --train-steps 0 --attention-windows 0", &status);
  EXPECT_EQ(status, 0) << text;
  EXPECT_NE(text.find("matmul peak float32"), std::string::npos) << text;
  EXPECT_EQ(text.find("nan"), std::string::npos) << text;
  EXPECT_EQ(text.find("train float32"), std::string::npos) << text;
  auto bad = run("bench --train-steps -1", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(bad.find("--train-steps: must be 0 or more, got -1"), std::string::npos) << bad;
  bad = run("bench --train-steps many", &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(bad.find("--train-steps"), std::string::npos) << bad;
}

}  // namespace
}  // namespace bakallm
