#include "train/trainer.h"

#include <atomic>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "dist/communicator.h"
#include "dist/reducer.h"
#include "eval/evaluator.h"
#include "infer/generate.h"
#include "io/model_dir.h"
#include "model/runtime.h"
#include "ops/dropout.h"
#include "ops/matmul.h"
#include "train/checkpoint.h"
#include "train/metrics.h"
#include "train/schedule.h"
#include "util/atomic_file.h"
#include "util/clock.h"
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
  DataSet d;
  try {
    nlohmann::json m;
    in >> m;
    for (const auto& s : m.at("train_shards")) d.train.push_back(dir + "/" + s.get<std::string>());
    for (const auto& s : m.at("val_shards")) d.val.push_back(dir + "/" + s.get<std::string>());
    d.bos = m.value("bos_id", 1u);
    d.vocab = m.value("vocab_size", int64_t{0});
  } catch (const nlohmann::json::exception& e) {
    throw file_error(path, std::string("not a bakallm manifest: ") + e.what());
  }
  d.tokenizer = find_tokenizer(dir);
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
  std::vector<uint32_t> all(doc.begin() + (tok.has_bos() ? 1 : 0), doc.end());  // prompt and continuation, decoded together
  for (auto t : out[0].ids) all.push_back(static_cast<uint32_t>(t));
  return tok.decode(all);
}

}  // namespace

bool stop_requested() { return g_stop; }

std::string resolve_dtype(const TrainOptions& o, bool on_cpu) {
  if (o.dtype == "float32" || o.dtype == "bfloat16") return o.dtype;
  if (o.dtype != "auto") throw Error("--dtype must be auto, float32 or bfloat16, got '" + o.dtype + "'");
  const std::string recorded = o.run_dir + "/train_config.json";
  if (o.resume && std::filesystem::exists(recorded)) {  // a resumed run keeps the dtype it started with
    try {
      const auto j = nlohmann::json::parse(std::ifstream(recorded));
      const auto d = j.value("dtype", std::string());
      if (d == "float32" || d == "bfloat16") return d;
    } catch (const nlohmann::json::exception&) {
    }
  }
  if (!on_cpu) return "float32";
  const double f32 = measure_matmul_flops(torch::kFloat, 512), bf16 = measure_matmul_flops(torch::kBFloat16, 512);
  const std::string pick = bf16 > 1.2 * f32 ? "bfloat16" : "float32";  // bf16 costs a little precision: only for a clear gain
  std::cerr << "dtype auto: " << pick << " (products: bfloat16 " << static_cast<int>(bf16 / 1e9) << ", float32 "
            << static_cast<int>(f32 / 1e9) << " GFLOP/s on this CPU)\n";
  return pick;
}

std::string bfloat16_advice(double float32_flops, double bfloat16_flops) {
  if (bfloat16_flops >= float32_flops) return "";
  return "note: bfloat16 products run at " + std::to_string(static_cast<int>(bfloat16_flops / 1e9)) +
         " GFLOP/s on this CPU against " + std::to_string(static_cast<int>(float32_flops / 1e9)) +
         " for float32: --dtype float32 trains faster here";
}

namespace {

// Installs the SIGINT/SIGTERM handlers for the life of a run, and restores the old ones.
struct SignalScope {
  using Handler = void (*)(int);
  Handler old_int, old_term;
  SignalScope() {
    g_stop = false;
    old_int = std::signal(SIGINT, on_signal);
    old_term = std::signal(SIGTERM, on_signal);
  }
  ~SignalScope() {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  }
};

// One training run: the model, its optimizer and data, and what is written to RUN.
class Run {
 public:
  explicit Run(const TrainOptions& o)
      : o_(o), data_(read_manifest(o.data_dir)), rank_(o.comm ? o.comm->rank() : 0), world_(o.comm ? o.comm->size() : 1) {
    if (rank_ == 0) {  // the others never write RUN
      if (!o.resume && !foreign_entries(o.run_dir, [](const std::string&, bool) { return false; }).empty())
        throw file_error(o.run_dir, "holds a run already: continue it with --resume, or give another --out (nothing was changed)");
      fs::create_directories(o.run_dir);
      if (const int n = remove_checkpoint_orphans(o.run_dir))
        std::cerr << "removed " << n << " leftover(s) of an interrupted run in " << o.run_dir << "\n";
    }
    tokenizer_ = data_.tokenizer;
    if (!o.init_model.empty()) {  // from a model directory, or fresh from the config
      auto loaded = load_model_dir(o.init_model);
      model_ = loaded.model;
      if (!loaded.tokenizer_path.empty() && tokenizer_.empty()) tokenizer_ = loaded.tokenizer_path;
    } else {
      model_ = make_model(o.config, o.seed);
    }
    require_vocab_fits(data_.vocab, config().vocab_size, o.data_dir);
    for (const auto* shards : {&data_.train, &data_.val})  // every id, before the first step
      for (const auto& path : *shards) ShardReader(path).require_ids_below(config().vocab_size);
    dtype_ = resolve_dtype(o, model_->embed_out->weight.device().is_cpu());
    const bool bf16 = dtype_ == "bfloat16";
    model_->set_compute_dtype(bf16 ? torch::kBFloat16 : torch::kFloat);
    model_->train();
    if (bf16 && o.dtype != "auto" && rank_ == 0 && model_->embed_out->weight.device().is_cpu()) {
      const auto advice = bfloat16_advice(measure_matmul_flops(torch::kFloat, 512),
                                          measure_matmul_flops(torch::kBFloat16, 512));
      if (!advice.empty()) std::cerr << advice << "\n";
    }
    optimizer_ = make_optimizer(model_, o.optimizer);
    LoaderOptions lo;
    lo.shards = data_.train;
    lo.rows = o.batch_rows * world_;  // every rank deals all rows, reads its own
    lo.first_row = o.batch_rows * rank_;
    lo.local_rows = o.batch_rows;
    lo.windows_per_step = windows_per_step();
    lo.bos_id = data_.bos;
    lo.seed = o.seed;
    lo.packing = parse_packing(o.packing);
    loader_ = std::make_unique<Loader>(lo, config());
    if (o.comm) reducer_ = std::make_unique<GradientReducer>(model_->parameters(), *o.comm);
  }

  const Config& config() const { return model_->config(); }
  int64_t windows_per_step() const {  // default: the config's detach_every (2 when it is 0: never inside a step)
    return o_.windows_per_step > 0 ? o_.windows_per_step : config().detach_every > 0 ? config().detach_every : 2;
  }

  // --resume: the newest checkpoint's model, optimizer, stream and loader; else a seeded start.
  void start() {
    const auto ckpts = o_.resume ? list_checkpoints(o_.run_dir) : std::vector<std::string>{};
    if (o_.resume && ckpts.empty())  // killed before its first checkpoint: nothing to continue
      std::cerr << "no checkpoint in " << o_.run_dir << "/checkpoints yet: starting from step 0\n";
    if (!ckpts.empty()) {
      progress_ = load_checkpoint(ckpts.back(), model_, *optimizer_, stream_);  // the stream of every rank's rows
      const int64_t rows = o_.batch_rows * world_, saved_rows = static_cast<int64_t>(progress_.loader.at("rows").size());
      const bool redeal = progress_.world_size != world_;
      const int64_t kept = loader_->restore(progress_.loader, redeal);
      stream_ = stream_.resized(rows).rows(o_.batch_rows * rank_, o_.batch_rows);
      if (rank_ == 0) {
        std::cerr << "resumed from " << ckpts.back() << " (step " << progress_.step << ")\n";
        if (redeal)
          std::cerr << "the checkpoint was written by " << progress_.world_size << " rank(s) x " << saved_rows / progress_.world_size
                    << " rows, this run has " << world_ << " x " << o_.batch_rows << ": "
                    << (kept == rows && saved_rows == rows ? std::string("the same rows, re-dealt: exact")
                                                           : std::to_string(kept) + " of " + std::to_string(rows) +
                                                                 " rows continue their streams, the others start new documents")
                    << "\n";
      }
    } else {
      torch::manual_seed(o_.seed);
    }
    progress_.world_size = world_;
    if (rank_ != 0) return;  // the files below are rank 0's
    nlohmann::json j = {{"config", config_to_json(config())}, {"data", o_.data_dir},      {"steps", o_.steps},
                        {"batch_rows", o_.batch_rows},         {"windows_per_step", windows_per_step()},
                        {"grad_accum", o_.grad_accum},         {"lr", o_.optimizer.lr}, {"weight_decay", o_.optimizer.weight_decay},
                        {"warmup", o_.warmup},                 {"clip", o_.clip},       {"dtype", dtype_},
                        {"packing", o_.packing},                {"world_size", world_},
                        {"seed", o_.seed}};
    write_file_atomically(o_.run_dir + "/train_config.json", [&](std::ostream& out) { out << j.dump(2) << "\n"; });
    metrics_ = std::make_unique<MetricsLog>(o_.run_dir + "/metrics.jsonl", progress_.step);
  }

  // Data parallel, once every rank has started: rank 0's weights everywhere (as DDP does),
  // and the cost of summing the gradients alone. Before any forward: the
  // broadcast writes past the version counter that kept casts check (ops/cast_cache.h).
  void sync_ranks() {
    if (!o_.comm) return;
    torch::NoGradGuard no_grad;
    for (auto& p : model_->parameters()) o_.comm->broadcast(p.data(), 0);
    reducer_->measure_alone();  // once to warm up the connections
    result_.comm_alone = reducer_->measure_alone();
    if (rank_ == 0)
      std::cerr << "data parallel: " << world_ << " ranks x " << o_.batch_rows << " rows (global batch "
                << o_.batch_rows * world_ << "); gradients " << reducer_->bytes() / 1e6 << " MB in "
                << reducer_->buckets() << " bucket(s), " << static_cast<int>(1000 * result_.comm_alone)
                << " ms to sum alone\n";
  }

  // One optimizer step over grad_accum batches; returns the mean loss and the
  // tokens read (all ranks'). Sets STOP (a signal arrived) and timed_out_
  // (OUT_OF_TIME): in a data-parallel run, any rank's vote stops all ranks
  // after this same step.
  std::pair<double, int64_t> step(double lr, bool& stop, const std::function<bool()>& out_of_time) {
    padding_ = 0;
    set_learning_rate(*optimizer_, lr);
    clear_grads(model_->parameters());
    double loss_sum = 0;
    int64_t tokens = 0;
    for (int64_t micro = 0; micro < o_.grad_accum; ++micro) {
      auto batch = loader_->next();
      if (reducer_ && micro + 1 == o_.grad_accum) reducer_->arm();  // earlier micro-batches only accumulate
      auto out = model_->forward_loss(batch.ids, batch.targets, std::move(stream_), batch.resets);
      // This rank's share of the global mean over every rank's tokens (ranks' padding differs).
      const double share = batch.tokens == batch.global_tokens ? 1.0 : double(batch.tokens) / double(batch.global_tokens);
      auto loss = share == 1.0 ? out.loss : out.loss * share;
      (loss / static_cast<double>(o_.grad_accum)).backward();
      stream_ = std::move(out.state);
      stream_.detach_();
      loss_sum += out.loss.item<double>() * share;
      tokens += batch.global_tokens;
      padding_ += batch.padding / static_cast<double>(o_.grad_accum);
    }
    if (reducer_) {
      result_.comm_waited += reducer_->finish();
      auto votes = torch::tensor({loss_sum, g_stop ? 1.0 : 0.0, out_of_time() ? 1.0 : 0.0}, torch::kDouble);
      o_.comm->allreduce_sum(votes);
      loss_sum = votes[0].item<double>();
      stop = votes[1].item<double>() > 0;
      timed_out_ = votes[2].item<double>() > 0;
    } else {
      stop = g_stop;
      timed_out_ = out_of_time();
    }
    const double loss = loss_sum / static_cast<double>(o_.grad_accum);
    if (!std::isfinite(loss))
      throw Error("step " + std::to_string(progress_.step + 1) + ": loss is " + std::to_string(loss) +
                  "; stopping. The last good checkpoint is " +
                  (result_.last_checkpoint.empty() ? std::string("(none yet)") : result_.last_checkpoint));
    zero_missing_grads(*optimizer_);
    grad_norm_ = torch::nn::utils::clip_grad_norm_(model_->parameters(), o_.clip);
    optimizer_->step();
    return {loss, tokens};
  }

  void checkpoint() {
    progress_.loader = loader_->state();
    const std::string dir = o_.run_dir + "/checkpoints/step_" + std::to_string(progress_.step);
    result_.last_checkpoint = dir;
    if (!o_.comm) {
      save_checkpoint(dir, model_, *optimizer_, progress_, stream_, tokenizer_);
    } else {  // rank 0 writes every rank's rows
      const auto all = stream_.map_rows([&](const torch::Tensor& t) { return o_.comm->allgather_rows(t); });
      if (rank_ != 0) return;
      save_checkpoint(dir, model_, *optimizer_, progress_, all, tokenizer_);
    }
    prune_checkpoints(o_.run_dir, o_.keep_checkpoints);
    const auto why = plot_losses(metrics_->path(), o_.run_dir + "/loss.png");
    if (!why.empty()) std::cerr << "note: no loss plot: " << why << "\n";
  }

  void validate() {
    if (data_.val.empty() || rank_ != 0) return;  // the others wait at the next step
    model_->eval();
    auto s = evaluate_shards(model_, data_.val, data_.bos, 1, {}, o_.eval_tokens);
    model_->train();
    result_.val_loss = s.loss();
    metrics_->write({{"step", progress_.step}, {"tokens", progress_.tokens}, {"val_loss", s.loss()}, {"val_ppl", s.perplexity()}, {"val_tokens", s.tokens}});
  }

  void sample() {
    if (rank_ == 0) result_.sample = sample_text(model_, tokenizer_, o_.prompt, o_.sample_tokens, o_.seed);
  }

  TrainResult run() {
    SignalScope signals;
    sync_ranks();
    set_dropout_first_row(o_.batch_rows * rank_);
    struct ResetDropout {
      ~ResetDropout() { set_dropout_first_row(0); }
    } reset_dropout;
    const LrSchedule schedule{o_.optimizer.lr, o_.optimizer.lr * o_.min_lr_ratio, o_.warmup, o_.steps};
    ProgressBar bar(static_cast<double>(o_.steps), o_.progress && rank_ == 0);
    const auto begin = Clock::now();
    auto elapsed = [&] { return seconds_since(begin); };
    const double seconds_before = progress_.seconds;
    const int64_t first_step = progress_.step;
    double smoothed = NAN, waited_before = 0;
    auto out_of_time = [&] {
      if (o_.max_minutes <= 0) return false;
      return (o_.minutes_span_resumes ? progress_.seconds : elapsed()) > o_.max_minutes * 60;
    };
    bool timed_out = o_.minutes_span_resumes && out_of_time();  // a resumed run whose time was already spent
    if (o_.comm) {  // a resumed run's clock may read differently on each rank: rank 0's decides
      auto t = torch::tensor({rank_ == 0 && timed_out ? 1.0 : 0.0}, torch::kDouble);
      o_.comm->allreduce_sum(t);
      timed_out = t.item<double>() > 0;
    }
    bool stop = false;
    while (progress_.step < o_.steps && !stop && !timed_out) {
      const auto t0 = Clock::now();
      const double lr = schedule.at(progress_.step);
      const auto [loss, tokens] = step(lr, stop, [&] {
        progress_.seconds = seconds_before + elapsed();
        return out_of_time();
      });
      timed_out = timed_out_;
      ++progress_.step;
      progress_.tokens += tokens;
      const double step_seconds = seconds_since(t0);
      progress_.seconds = seconds_before + elapsed();
      if (result_.first_loss == 0) result_.first_loss = loss;
      result_.last_loss = loss;
      smoothed = std::isnan(smoothed) ? loss : 0.9 * smoothed + 0.1 * loss;
      if (metrics_) {
        nlohmann::json record = {{"step", progress_.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", grad_norm_},
                                 {"tokens", progress_.tokens}, {"tok_per_s", tokens / step_seconds}, {"padding", padding_},
                                 {"seconds", progress_.seconds}};
        if (o_.comm) record["comm_wait_s"] = result_.comm_waited - waited_before;
        metrics_->write(record);
      }
      waited_before = result_.comm_waited;
      char status[160];
      std::snprintf(status, sizeof status, "step %lld/%lld loss %.4f lr %.2e %.0f tok/s pad %.0f%%",
                    (long long)progress_.step, (long long)o_.steps, smoothed, lr, tokens / step_seconds, 100 * padding_);
      bar.update(static_cast<double>(progress_.step - first_step) /
                     static_cast<double>(std::max<int64_t>(1, o_.steps - first_step)) * static_cast<double>(o_.steps),
                 status);
      if (o_.eval_every > 0 && progress_.step % o_.eval_every == 0) validate();
      if (o_.checkpoint_every > 0 && progress_.step % o_.checkpoint_every == 0 && progress_.step < o_.steps &&
          !stop && !timed_out) {
        checkpoint();
        sample();
        if (!result_.sample.empty()) {
          bar.finish();
          std::cerr << "sample @" << progress_.step << ": " << result_.sample << "\n";
        }
      }
    }
    bar.finish();
    result_.interrupted = (stop || timed_out) && progress_.step < o_.steps;
    const bool validated_now = o_.eval_every > 0 && progress_.step % o_.eval_every == 0;
    if (!stop && !validated_now) validate();  // a signal asks for a quick exit: skip it
    checkpoint();
    sample();
    const int64_t steps_here = progress_.step - first_step;
    if (steps_here > 0) {
      result_.comm_waited /= static_cast<double>(steps_here);
      if (o_.comm && rank_ == 0)
        std::cerr << "data parallel: summing gradients takes " << static_cast<int>(1000 * result_.comm_alone)
                  << " ms alone; steps waited " << static_cast<int>(1000 * result_.comm_waited) << " ms for it ("
                  << static_cast<int>(100 * std::clamp(1 - result_.comm_waited / std::max(1e-9, result_.comm_alone), 0.0, 1.0))
                  << "% hidden behind the backward)\n";
    }
    result_.steps = progress_.step;
    result_.tokens = progress_.tokens;
    result_.seconds = progress_.seconds;
    return result_;
  }

 private:
  const TrainOptions& o_;
  const DataSet data_;
  std::string tokenizer_;
  BakaLM model_{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<Loader> loader_;
  std::unique_ptr<MetricsLog> metrics_;
  TrainProgress progress_;
  const int rank_, world_;                   // this rank, of WORLD ranks (0 of 1: one process)
  std::unique_ptr<GradientReducer> reducer_;  // data parallel only
  bool timed_out_ = false;                   // the last step's agreed vote
  std::string dtype_;  // float32 or bfloat16 (--dtype auto resolved)
  State stream_;
  double grad_norm_ = 0;
  double padding_ = 0;  // share of the last step's input slots that were padding
  TrainResult result_;
};

}  // namespace

namespace {

std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

// What every rank must be given alike, by option name.
nlohmann::json rank_options(const TrainOptions& o) {
  nlohmann::json shards = nlohmann::json::array();
  for (const auto& path : read_manifest(o.data_dir).train)
    shards.push_back(fs::path(path).filename().string() + ":" + std::to_string(fs::file_size(path)));
  return {{"--model", o.init_model}, {"config", o.init_model.empty() ? config_to_json(o.config) : nlohmann::json()},
          {"--data (shards)", shards}, {"--steps", o.steps}, {"--batch", o.batch_rows},
          {"--windows-per-step", o.windows_per_step}, {"--packing", o.packing}, {"--grad-accum", o.grad_accum},
          {"--lr", o.optimizer.lr}, {"--weight-decay", o.optimizer.weight_decay}, {"--min-lr-ratio", o.min_lr_ratio},
          {"--warmup", o.warmup}, {"--clip", o.clip}, {"--dtype", o.dtype}, {"--seed", o.seed},
          {"--resume", o.resume}, {"--eval-every", o.eval_every}, {"--checkpoint-every", o.checkpoint_every},
          {"--max-minutes", o.max_minutes}};
}

// A data-parallel run: two rendezvous that no rank's early failure can hang
// (the options, then the start), then the run; a failure is told to the others.
TrainResult train_rank(TrainOptions o) {
  Communicator& comm = *o.comm;
  std::exception_ptr failed;
  std::string error, payload;
  try {
    const auto mine = rank_options(o);
    if (comm.rank() == 0) o.dtype = resolve_dtype(o, Runtime{}.device.is_cpu());  // rank 0 measures for all
    payload = nlohmann::json{{"options", mine}, {"dtype", o.dtype}}.dump();
  } catch (const std::exception& e) {
    failed = std::current_exception();
    error = message_of(e);
  }
  const auto all = comm.agree("options", error, payload);
  if (failed) std::rethrow_exception(failed);
  const auto ours = nlohmann::json::parse(payload)["options"];
  for (int r = 0; r < comm.size(); ++r) {
    const auto theirs = nlohmann::json::parse(all[r])["options"];
    for (const auto& [name, value] : ours.items())
      if (theirs.value(name, nlohmann::json()) != value)
        throw Error("rank " + std::to_string(r) + " was given " + name + " " + theirs.value(name, nlohmann::json()).dump() +
                    ", rank " + std::to_string(comm.rank()) + " " + value.dump() + ": every rank needs the same options");
  }
  o.dtype = nlohmann::json::parse(all[0])["dtype"].get<std::string>();

  std::unique_ptr<Run> run;
  error.clear();
  try {
    run = std::make_unique<Run>(o);
    run->start();
  } catch (const std::exception& e) {
    failed = std::current_exception();
    error = message_of(e);
  }
  comm.agree("start", error, "");
  if (failed) std::rethrow_exception(failed);
  try {
    return run->run();
  } catch (const RankFailure&) {
    throw;
  } catch (const std::exception& e) {
    comm.report_failure(message_of(e));
    throw;
  }
}

}  // namespace

TrainResult train(const TrainOptions& o) {
  if (o.comm) return train_rank(o);
  Run run(o);
  run.start();
  return run.run();
}

}  // namespace bakallm
