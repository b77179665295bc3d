#include "train/trainer.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/tokenizer.h"
#include "eval/evaluator.h"
#include "infer/generate.h"
#include "io/model_dir.h"
#include "ops/matmul.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "train/schedule.h"
#include "util/error.h"
#include "util/progress.h"

namespace fs = std::filesystem;

namespace bakallm {

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) {
  g_stop = true;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends at once
  std::signal(SIGTERM, SIG_DFL);
}

struct DataSet {
  std::vector<std::string> train, val;
  std::string tokenizer;
  uint32_t bos = 1;
  int64_t vocab = 0;
};

DataSet read_manifest(const std::string& dir) {
  const std::string path = dir + "/manifest.json";
  std::ifstream in(path);
  if (!in) throw file_error(path, "missing: is this the output of `bakallm tokenize`?");
  nlohmann::json m;
  try {
    in >> m;
  } catch (const nlohmann::json::exception&) {
    throw file_error(path, "invalid JSON");
  }
  DataSet d;
  for (const auto& s : m.at("train_shards")) d.train.push_back(dir + "/" + s.get<std::string>());
  for (const auto& s : m.at("val_shards")) d.val.push_back(dir + "/" + s.get<std::string>());
  d.bos = m.value("bos_id", 1u);
  d.vocab = m.value("vocab_size", int64_t{0});
  if (fs::exists(dir + "/tokenizer.model")) d.tokenizer = dir + "/tokenizer.model";
  if (d.train.empty()) throw file_error(path, "lists no training shards");
  return d;
}

std::string sample_text(BakaLM& model, const std::string& tokenizer, const std::string& prompt, int64_t n,
                        uint64_t seed) {
  if (tokenizer.empty() || n <= 0) return "";
  Tokenizer tok(tokenizer);
  const auto doc = tok.encode_document(prompt);
  GenerateOptions go;
  go.max_new = n;
  go.sampling.temperature = 0.8;
  go.sampling.top_k = 40;
  go.sampling.seed = seed;
  const auto out = generate(model, &tok, {std::vector<int64_t>(doc.begin(), doc.end())}, go);
  std::vector<uint32_t> all(doc.begin() + 1, doc.end());  // the prompt and its continuation, decoded together
  for (auto t : out[0].ids) all.push_back(static_cast<uint32_t>(t));
  return tok.decode(all);
}

}  // namespace

bool stop_requested() { return g_stop; }

std::string bfloat16_advice(double float32_flops, double bfloat16_flops) {
  if (bfloat16_flops >= float32_flops) return "";
  return "note: bfloat16 products run at " + std::to_string(static_cast<int>(bfloat16_flops / 1e9)) +
         " GFLOP/s on this CPU against " + std::to_string(static_cast<int>(float32_flops / 1e9)) +
         " for float32: --dtype float32 trains faster here";
}

TrainResult train(const TrainOptions& o) {
  const DataSet data = read_manifest(o.data_dir);
  fs::create_directories(o.run_dir);

  // Model: from a directory, or fresh from the config.
  BakaLM model{nullptr};
  std::string tokenizer = data.tokenizer;
  if (!o.init_model.empty()) {
    auto loaded = load_model_dir(o.init_model);
    model = loaded.model;
    if (!loaded.tokenizer_path.empty() && tokenizer.empty()) tokenizer = loaded.tokenizer_path;
  } else {
    model = make_model(o.config, o.seed);
  }
  const Config& config = model->config();
  require_vocab_fits(data.vocab, config.vocab_size, o.data_dir);
  const bool bf16 = o.dtype == "bfloat16";
  if (!bf16 && o.dtype != "float32") throw Error("--dtype must be float32 or bfloat16");
  model->set_compute_dtype(bf16 ? torch::kBFloat16 : torch::kFloat);
  model->train();
  if (bf16 && model->embed_out->weight.device().is_cpu()) {
    const auto advice = bfloat16_advice(measure_matmul_flops(torch::kFloat, 512),
                                        measure_matmul_flops(torch::kBFloat16, 512));
    if (!advice.empty()) std::cerr << advice << "\n";
  }

  auto optimizer = make_optimizer(model, o.optimizer);
  LoaderOptions lo;
  lo.shards = data.train;
  lo.rows = o.batch_rows;
  lo.window = config.window_size;
  lo.windows_per_step = o.windows_per_step > 0 ? o.windows_per_step : config.detach_every;
  lo.bos_id = data.bos;
  lo.seed = o.seed;
  Loader loader(lo);

  TrainProgress progress;
  State stream;
  if (o.resume) {
    auto ckpts = list_checkpoints(o.run_dir);
    if (ckpts.empty()) throw Error(o.run_dir + ": --resume but no checkpoint in " + o.run_dir + "/checkpoints");
    progress = load_checkpoint(ckpts.back(), model, *optimizer, stream);
    loader.restore(progress.loader);
    std::cerr << "resumed from " << ckpts.back() << " (step " << progress.step << ")\n";
  } else {
    torch::manual_seed(o.seed);
  }
  {
    nlohmann::json j = {{"config", config_to_json(config)}, {"data", o.data_dir},      {"steps", o.steps},
                        {"batch_rows", o.batch_rows},       {"windows_per_step", lo.windows_per_step},
                        {"grad_accum", o.grad_accum},       {"lr", o.optimizer.lr}, {"weight_decay", o.optimizer.weight_decay},
                        {"warmup", o.warmup},               {"clip", o.clip},       {"dtype", o.dtype},
                        {"seed", o.seed}};
    std::ofstream(o.run_dir + "/train_config.json") << j.dump(2) << "\n";
  }
  MetricsLog metrics(o.run_dir + "/metrics.jsonl", progress.step);
  const LrSchedule schedule{o.optimizer.lr, o.optimizer.lr * o.min_lr_ratio, o.warmup, o.steps};

  g_stop = false;
  auto old_int = std::signal(SIGINT, on_signal);
  auto old_term = std::signal(SIGTERM, on_signal);
  struct RestoreSignals {
    decltype(old_int) i, t;
    ~RestoreSignals() {
      std::signal(SIGINT, i);
      std::signal(SIGTERM, t);
    }
  } restore_signals{old_int, old_term};

  TrainResult result;
  auto checkpoint = [&] {
    progress.loader = loader.state();
    const std::string dir = o.run_dir + "/checkpoints/step_" + std::to_string(progress.step);
    save_checkpoint(dir, model, *optimizer, progress, stream, tokenizer);
    prune_checkpoints(o.run_dir, o.keep_checkpoints);
    result.last_checkpoint = dir;
    const auto why = plot_losses(metrics.path(), o.run_dir + "/loss.png");
    if (!why.empty()) std::cerr << "note: no loss plot: " << why << "\n";
  };
  auto validate = [&] {
    if (data.val.empty()) return;
    model->eval();
    auto s = evaluate_shards(model, data.val, data.bos, 1, {}, o.eval_tokens);
    model->train();
    result.val_loss = s.loss();
    metrics.write({{"step", progress.step}, {"val_loss", s.loss()}, {"val_ppl", s.perplexity()}, {"val_tokens", s.tokens}});
  };

  ProgressBar bar(static_cast<double>(o.steps), o.progress);
  const auto start = std::chrono::steady_clock::now();
  const double seconds_before = progress.seconds;
  const int64_t first_step = progress.step;
  double smoothed = NAN;
  bool timed_out = false;
  while (progress.step < o.steps && !g_stop && !timed_out) {
    const auto t0 = std::chrono::steady_clock::now();
    const double lr = schedule.at(progress.step);
    set_learning_rate(*optimizer, lr);
    optimizer->zero_grad();
    double loss_sum = 0;
    int64_t tokens = 0;
    for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
      auto batch = loader.next();
      auto out = model->forward_loss(batch.ids, batch.targets, std::move(stream), batch.resets);
      (out.loss / static_cast<double>(o.grad_accum)).backward();
      stream = std::move(out.state);
      stream.detach_();
      loss_sum += out.loss.item<double>();
      tokens += batch.tokens;
    }
    const double loss = loss_sum / static_cast<double>(o.grad_accum);
    if (!std::isfinite(loss))
      throw Error("step " + std::to_string(progress.step + 1) + ": loss is " + std::to_string(loss) +
                  "; stopping. The last good checkpoint is " +
                  (result.last_checkpoint.empty() ? std::string("(none yet)") : result.last_checkpoint));
    const double grad_norm = torch::nn::utils::clip_grad_norm_(model->parameters(), o.clip);
    optimizer->step();
    ++progress.step;
    progress.tokens += tokens;
    const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.seconds = seconds_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (result.first_loss == 0) result.first_loss = loss;
    result.last_loss = loss;
    smoothed = std::isnan(smoothed) ? loss : 0.9 * smoothed + 0.1 * loss;
    metrics.write({{"step", progress.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm},
                   {"tokens", progress.tokens}, {"tok_per_s", tokens / step_seconds}, {"seconds", progress.seconds}});
    char status[160];
    std::snprintf(status, sizeof status, "step %lld/%lld loss %.4f lr %.2e %.0f tok/s", (long long)progress.step,
                  (long long)o.steps, smoothed, lr, tokens / step_seconds);
    bar.update(static_cast<double>(progress.step - first_step) /
                   static_cast<double>(std::max<int64_t>(1, o.steps - first_step)) * static_cast<double>(o.steps),
               status);
    if (o.eval_every > 0 && progress.step % o.eval_every == 0) validate();
    const bool out_of_time =
        o.max_minutes > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > o.max_minutes * 60;
    if (out_of_time) timed_out = true;
    if (o.checkpoint_every > 0 && progress.step % o.checkpoint_every == 0 && progress.step < o.steps && !g_stop &&
        !timed_out) {
      checkpoint();
      result.sample = sample_text(model, tokenizer, o.prompt, o.sample_tokens, o.seed);
      if (!result.sample.empty()) {
        bar.finish();
        std::cerr << "sample @" << progress.step << ": " << result.sample << "\n";
      }
    }
  }
  bar.finish();
  result.interrupted = (g_stop || timed_out) && progress.step < o.steps;
  const bool validated_now = o.eval_every > 0 && progress.step % o.eval_every == 0;
  if (!g_stop && !validated_now) validate();  // a signal asks for a quick exit: skip it
  checkpoint();
  result.sample = sample_text(model, tokenizer, o.prompt, o.sample_tokens, o.seed);
  result.steps = progress.step;
  return result;
}

}  // namespace bakallm
