#include "bench/benchmark.h"

#include <dlfcn.h>
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <thread>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "infer/decoder.h"
#include "io/model_dir.h"
#include "model/baka_lm.h"
#include "model/flops.h"
#include "model/linear.h"
#include "ops/block_attention.h"
#include "ops/q8.h"
#include "ops/compute_limit.h"
#include "ops/cpu.h"
#include "ops/matmul.h"
#include "ops/onednn.h"
#include "train/optimizer.h"
#include "util/clock.h"
#include "util/huge_pages.h"

namespace bakallm {

namespace {

template <typename F>
double seconds_of(F&& f) {
  const auto t0 = Clock::now();
  f();
  return seconds_since(t0);
}

// Bytes/s this machine reads: a sum over a tensor far larger than any cache,
// in memory advised for huge pages (as the decoded weights are) or ordinary
// 4 kB pages. Sets HUGE_PAGES to whether the kernel gave huge pages.
double read_bandwidth(bool huge, bool* huge_pages = nullptr, int64_t bytes = int64_t{1} << 29) {
  const int64_t before = huge_page_bytes();
  auto big = huge ? empty_huge({bytes / 4}, torch::kFloat).fill_(1) : torch::ones({bytes / 4});
  if (huge_pages) *huge_pages = huge_page_bytes() - before >= bytes / 2;
  big.sum();
  int reps = 0;
  const double t = seconds_of([&] {
    for (; reps < 3; ++reps) big.sum();
  });
  return static_cast<double>(bytes) * reps / t;
}

// Bytes of weights one decoded token reads: every Linear weight of the
// layers and the head, not the input embedding (one row of it), not the
// memory solidifier's (run once a window, when it closes) nor the past
// key/value gates' (applied to the cache once, when a window opens).
int64_t decode_weight_bytes(BakaLM& model) {
  int64_t bytes = 0;
  for (const auto& item : model->named_modules()) {
    const auto& name = item.key();
    const auto linear = std::dynamic_pointer_cast<LinearImpl>(item.value());
    const bool per_window = name.find("memory_injector") != std::string::npos ||
                            name.find("past_k_gate") != std::string::npos || name.find("past_v_gate") != std::string::npos;
    if (linear && !per_window)
      for (const auto* t : linear->stored_weights()) bytes += static_cast<int64_t>(t->nbytes());
  }
  return bytes;
}

BakaLM make_bench_model(const BenchOptions& o) {
  if (!o.model_dir.empty()) return load_model_dir(o.model_dir).model;
  return make_model(o.config, 0);
}

nlohmann::json train_rate(BakaLM& model, const BenchOptions& o, bool bf16) {
  const auto& c = model->config();
  model->train();
  model->set_compute_dtype(bf16 ? torch::kBFloat16 : torch::kFloat);
  const int64_t B = o.train_rows, T = c.detach_every * c.window_size;
  auto ids = torch::randint(0, c.vocab_size, {B, T}, torch::kLong);
  auto targets = shifted_targets(ids);
  // As the trainer steps (train/trainer.cpp): the stream's state carried from
  // step to step, detached, so every window after the first step attends to
  // its cache and gates it, as flops_per_token counts. (Steps from a fresh
  // state had run ~10% fewer product FLOPs than counted: tiny, base.)
  State state;
  auto step = [&] {
    clear_grads(model->parameters());  // train/optimizer.h
    auto out = model->forward_loss(ids, targets, std::move(state));
    out.loss.backward();
    state = std::move(out.state);
    state.detach_();
  };
  step();  // warm-up: the first step opens a fresh stream
  // The product's rate probed before each step and after the last (one short
  // round of the peak's product, outside the timed steps and the product
  // counts): the machine's speed while the steps ran, on a host whose speed
  // changes by seconds (BENCHMARKS.md, session 29), where the peak (the best
  // of rounds before and after) catches its fast moments.
  const auto compute = bf16 ? torch::kBFloat16 : torch::kFloat;
  auto probe = [&] { return measure_matmul_flops(compute, 1024, /*rounds=*/1, /*reps=*/2); };
  std::vector<double> probes{probe()};
  double t = 0, products = 0, product_flops = 0;
  for (int64_t i = 0; i < o.train_steps; ++i) {
    onednn::count_product_time(true);
    const double in_products = onednn::product_seconds(), flops_before = onednn::product_flops();
    t += seconds_of(step);
    products += onednn::product_seconds() - in_products;
    product_flops += onednn::product_flops() - flops_before;
    onednn::count_product_time(false);
    probes.push_back(probe());
  }
  if (!o.profile_dir.empty()) {  // one more step, traced op by op (untimed)
    torch::autograd::profiler::RecordProfile trace(o.profile_dir + (bf16 ? "/train_step_bfloat16.json" : "/train_step.json"));
    step();
  }
  const double rate = B * T * o.train_steps / t;
  const double flops = rate * flops_per_token(c).training_per_token;
  model->set_compute_dtype(torch::kFloat);
  nlohmann::json out = {{"tokens_per_s", rate}, {"flops_per_s", flops}, {"probes_flops_per_s", probes}};
  // MFU against the mean probe: the machine's mean product rate over the steps' time.
  out["mfu_probed"] = flops * static_cast<double>(probes.size()) / std::accumulate(probes.begin(), probes.end(), 0.0);
  // What the products ran, a token: beside flops_per_token's count, which MFU divides by.
  if (product_flops > 0) out["product_flops_per_token"] = product_flops / static_cast<double>(B * T * o.train_steps);
  // The step split: the share of its time in oneDNN's products, and the rate
  // they ran at (the model's FLOPs are its products') where they ran there.
  if (products > 0 && t > 0) {
    out["products_share"] = products / t;
    out["products_flops_per_s"] = flops * t / products;
  }
  return out;
}

double forward_rate(BakaLM& model) {
  const auto& c = model->config();
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(0, c.vocab_size, {4, 2 * c.window_size}, torch::kLong);
  auto targets = shifted_targets(ids);
  model->forward_loss(ids, targets);
  const double t = seconds_of([&] { model->forward_loss(ids, targets); });
  return ids.numel() / t;
}

// WEIGHT_BYTES: what a token reads of the stored weights (decode_weight_bytes);
// BANDWIDTH: the best read bandwidth this run measured before; KEY: the entry's
// name in the json (and its trace's, with --profile).
nlohmann::json decode_rates(BakaLM& model, const BenchOptions& o, int64_t weight_bytes, double bandwidth_before,
                            const std::string& key) {
  const auto& c = model->config();
  model->eval();
  nlohmann::json out = nlohmann::json::array();
  for (int64_t windows : o.decode_windows) {
    Decoder dec(model, 1);
    auto prompt = torch::randint(0, c.vocab_size, {1, windows * c.window_size}, torch::kLong);
    const double prefill = seconds_of([&] { dec.feed(prompt); });
    auto next = torch::randint(0, c.vocab_size, {1, 1}, torch::kLong);
    // The first token opens the next window (gating the cache's keys and
    // values, the EMA state: once per W tokens), timed apart from the rest.
    const double first = seconds_of([&] { dec.feed(next); });
    // The floor's bandwidth: the best of the run's earlier measurement and
    // two beside these tokens, before and after them. On a host whose
    // bandwidth drifts (21 to 27 GB/s within one run, session 15; one
    // measurement of 15.9 in session 16) one measurement alone can judge a
    // run by a limit its time never had, either way; the best is the limit.
    double bandwidth = std::max(bandwidth_before, read_bandwidth(true));
    double t = 0, attended = 0;  // seconds; bytes of keys and values read, over the timed tokens
    std::vector<double> each;    // each token's seconds: the median shows a busy host's stalls apart
    for (int64_t i = 0; i < o.decode_tokens; ++i) {
      attended += static_cast<double>(dec.attended_bytes());
      each.push_back(seconds_of([&] { dec.feed(next); }));
      t += each.back();
    }
    bandwidth = std::max(bandwidth, read_bandwidth(true));
    std::nth_element(each.begin(), each.begin() + each.size() / 2, each.end());
    if (!o.profile_dir.empty() && out.empty()) {  // 16 more tokens, traced (untimed)
      torch::autograd::profiler::RecordProfile trace(o.profile_dir + "/" + key + ".json");
      for (int i = 0; i < 16; ++i) dec.feed(next);
    }
    out.push_back({{"context_windows", windows},
                   {"context_tokens", windows * c.window_size},
                   {"prefill_tokens_per_s", prompt.numel() / prefill},
                   {"first_token_ms", 1000 * first},
                   {"decode_ms_per_token", 1000 * t / o.decode_tokens},
                   {"decode_ms_per_token_median", 1000 * each[each.size() / 2]},
                   {"attended_bytes_per_token", attended / o.decode_tokens},
                   {"read_bytes_per_s", bandwidth},
                   {"floor_ms_per_token", 1000 * (static_cast<double>(weight_bytes) + attended / o.decode_tokens) / bandwidth}});
  }
  return out;
}

// CPU time of the whole machine from /proc/stat: {busy, total} jiffies.
std::pair<double, double> cpu_jiffies() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  double v[10] = {0};
  in >> cpu;
  for (double& x : v) in >> x;
  double total = 0;
  for (double x : v) total += x;
  return {total - v[3] - v[4], total};  // idle and iowait are not busy
}

}  // namespace

MachineLoad measure_background_load(double seconds) {
  MachineLoad m;
  const auto before = cpu_jiffies();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));  // this process idles meanwhile
  const auto after = cpu_jiffies();
  const double total = after.second - before.second;
  m.busy_share = total > 0 ? std::clamp((after.first - before.first) / total, 0.0, 1.0) : 0.0;
  std::ifstream("/proc/loadavg") >> m.loadavg_1m;
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    if (m.cpu_model.empty() && line.rfind("model name", 0) == 0) m.cpu_model = line.substr(line.find(':') + 2);
    if (line.rfind("flags", 0) == 0) {
      m.amx = line.find(" amx_bf16") != std::string::npos;
      m.avx512_bf16 = line.find(" avx512_bf16") != std::string::npos;
      break;
    }
  }
  return m;
}

namespace {
int64_t status_kib(const std::string& field) {  // a "Field:   123 kB" line of /proc/self/status
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  return 0;
}
}  // namespace

int64_t rss_bytes() { return status_kib("VmRSS") * 1024; }
int64_t peak_rss_since_reset_bytes() { return status_kib("VmHWM") * 1024; }

void reset_peak_rss() {
  // tcmalloc (linked into the binaries where Debian has it) keeps freed pages;
  // its C API hands them back. Looked up at run time: the library may be absent.
  using Release = void (*)();
  if (auto release = reinterpret_cast<Release>(dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"))) release();
  malloc_trim(0);
  std::ofstream("/proc/self/clear_refs") << "5";  // VmHWM := VmRSS
}

int64_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;
}

namespace {
// One training step (forward and backward) of two windows of W tokens, batch
// 1, with KERNEL's attention: the second window attends to W+2M+2 rows of its
// own and as many of the cache. Peak memory above the resident size before
// the step, and seconds.
nlohmann::json attention_step(const Config& base, int64_t W, AttentionKernel kernel) {
  Config c = base;
  c.window_size = W;
  auto model = make_model(c, 0);
  model->train();
  torch::manual_seed(1);
  auto ids = torch::randint(0, c.vocab_size, {1, 2 * W}, torch::kLong);
  const auto chosen = attention_kernel();  // the user's (BAKALLM_ATTENTION), for what bench measures next
  set_attention_kernel(kernel);
  reset_peak_rss();
  const int64_t before = rss_bytes();
  const double seconds = seconds_of([&] { model->forward_loss(ids, ids).loss.backward(); });
  const int64_t peak = peak_rss_since_reset_bytes() - before;
  set_attention_kernel(chosen);
  return {{"peak_bytes", peak}, {"seconds", seconds}};
}

// Bytes the kernel could still allocate (/proc/meminfo's MemAvailable).
int64_t available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return 0;
}

nlohmann::json attention_memory(const Config& c, const std::vector<int64_t>& windows) {
  nlohmann::json out = nlohmann::json::array();
  for (const int64_t W : windows) {
    const int64_t rows = W + c.num_memory_tokens * 2 + 2;  // of a window; its keys: twice that
    const int64_t weights = rows * 2 * rows * 4;            // one [T, 2T] float32 matrix
    auto blocks = attention_step(c, W, AttentionKernel::kBlocks);  // the smaller first: the larger's pages stay out of it
    nlohmann::json row = {{"window", W}, {"weights_bytes_per_layer", weights}, {"blocks", blocks}};
    // The dense step holds about 3.6 such matrices per layer more (tiny, W = 8192: 15.5 GB over 8 layers of
    // 545 MB): where that would not fit, it is not run (the kernel would kill the process).
    const int64_t dense_need = blocks["peak_bytes"].get<int64_t>() + weights * 4 * (c.num_layers + 1);
    if (dense_need > available_bytes()) {
      row["dense"] = {{"skipped", "would need about " + std::to_string(dense_need >> 30) + " GiB, more than is available"}};
    } else {
      row["dense"] = attention_step(c, W, AttentionKernel::kDense);
      row["saved_bytes"] = row["dense"]["peak_bytes"].get<int64_t>() - blocks["peak_bytes"].get<int64_t>();
    }
    out.push_back(row);
  }
  return out;
}
}  // namespace

nlohmann::json run_benchmarks(const BenchOptions& o) {
  if (!o.profile_dir.empty()) std::filesystem::create_directories(o.profile_dir);
  auto model = make_bench_model(o);
  const auto& c = model->config();
  nlohmann::json j;
  j["config"] = config_to_json(c);
  j["threads"] = torch::get_num_threads();
  // Other processes' load, measured while this one idles: a figure taken on
  // a busy machine is recognisable (with 2 threads every small op then waits).
  const auto load = measure_background_load();
  j["machine"] = {{"cpu_model", load.cpu_model},
                  {"amx", load.amx},
                  {"avx512_bf16", load.avx512_bf16},
                  {"background_cpu_share", load.busy_share},
                  {"loadavg_1m", load.loadavg_1m}};
  j["onednn_float32"] = onednn_enabled();
  // Which oneDNN kernel a training step's bfloat16 products run: per-shape
  // brgemm on AMX tiles, or the one run-time jit gemm (onednn.h, ProductPath).
  j["onednn_bfloat16_products"] = !onednn::available()   ? "libtorch (no oneDNN in this build)"
                                  : onednn::amx_products() ? "brgemm on AMX, per shape"
                                                           : "jit gemm, run-time shape";
  int64_t weight_bytes = 0;
  for (const auto& p : model->parameters()) weight_bytes += p.numel() * p.element_size();
  j["weight_bytes"] = weight_bytes;
  j["flops_per_token"] = {{"forward", flops_per_token(c).forward_per_token},
                          {"training", flops_per_token(c).training_per_token}};
  // The product's peak and training in DTYPE, and MFU against that peak. A
  // peak measured while a neighbour runs comes out low (one run measured
  // float32 at 231 against 281-312 GFLOP/s and printed MFU 120%): the peak is
  // the better of a measurement before the training steps and one after.
  // Both measurements are kept (matmul_flops_per_s_before_after): where the
  // machine's speed changed between them by over kPeakMoved (a host whose AMX
  // rate switches by seconds: peak_moved), MFU depends on which moments the
  // steps ran in.
  // With no timed steps (--train-steps 0) the peak alone is measured: a
  // rate of no tokens over no time would print as NaN.
  auto train_against_peak = [&](torch::ScalarType dtype, const char* name) {
    const double before = measure_matmul_flops(dtype);
    if (o.train_steps == 0) {
      j["matmul_flops_per_s"][name] = before;
      j["matmul_flops_per_s_before_after"][name] = {before, before};
      return;
    }
    auto train = train_rate(model, o, dtype == torch::kBFloat16);
    const double after = measure_matmul_flops(dtype);
    const double peak = std::max(before, after);
    train["mfu"] = train["flops_per_s"].get<double>() / peak;
    if (j.contains("compute_flops_per_s") && j["compute_flops_per_s"].contains(name))  // against the arithmetic's limit
      train["mfu_of_limit"] = train["flops_per_s"].get<double>() / j["compute_flops_per_s"][name].get<double>();
    if (train.contains("products_flops_per_s"))  // MFU were nothing between the products
      train["products_mfu"] = train["products_flops_per_s"].get<double>() / peak;
    j["matmul_flops_per_s"][name] = peak;
    j["matmul_flops_per_s_before_after"][name] = {before, after};
    train["peak_moved"] = peak > kPeakMoved * std::min(before, after);
    j["train"][name] = train;
  };
  // The arithmetic's own limit, registers only (ops/compute_limit.h): the
  // products' peak above against it tells a slow memory side from a slow CPU.
  for (const auto& [name, loop] : {std::pair{"float32", fma_loop}, std::pair{"bfloat16", tile_loop}})
    if (const double rate = compute_flops_per_s(loop, j["threads"].get<int>()); rate > 0)
      j["compute_flops_per_s"][name] = rate;  // absent where the loop cannot run (no vector FMA, no AMX)
  train_against_peak(torch::kFloat, "float32");
  if (o.bf16) train_against_peak(torch::kBFloat16, "bfloat16");
  j["forward_tokens_per_s"] = forward_rate(model);
  if (!o.attention_windows.empty()) j["attention_step"] = attention_memory(c, o.attention_windows);
  // The floor's bandwidth: the better of 2 MB and 4 kB pages.
  bool huge_pages = false;
  const double huge = read_bandwidth(true, &huge_pages), small = read_bandwidth(false);
  j["read_bytes_per_s"] = std::max(huge, small);
  j["read_bytes_per_s_4k_pages"] = small;
  j["machine"]["huge_pages"] = huge_pages;
  if (!o.decode_windows.empty()) {
    auto decode_in = [&](torch::ScalarType dtype, const char* name, const char* key) {
      model->store_linear_weights(dtype);  // as generate, eval and serve do: in huge pages
      const int64_t bytes = decode_weight_bytes(model);
      j["decode_weight_bytes"][name] = bytes;
      j[key] = decode_rates(model, o, bytes, j["read_bytes_per_s"].get<double>(), key);
    };
    decode_in(torch::kFloat, "float32", "decode");
    if (o.bf16) {  // last: the float32 weights are gone after this
      decode_in(torch::kBFloat16, "bfloat16", "decode_bfloat16_weights");
      decode_in(torch::kChar, "int8", "decode_int8_weights");  // Q8_0 (from the bf16 values: the speed is the same)
      j["q8_kernel"] = isa_name(kernel_isa());  // the row products' instruction set
    }
  }
  j["peak_rss_bytes"] = peak_rss_bytes();
  return j;
}

}  // namespace bakallm
