// bakallm bench [--model DIR | --preset P] [--json]
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "bench/benchmark.h"
#include "io/model_dir.h"
#include "util/error.h"

namespace bakallm::cli {

void add_bench(CLI::App& app) {
  struct Args {
    BenchOptions o;
    std::string preset = "tiny";
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("bench", "Measure matmul peak, training/forward tokens/s, MFU, decode time vs context");
  auto* m = cmd->add_option("--model", a->o.model_dir, "model directory");
  cmd->add_option("--preset", a->preset, "preset to measure with random weights (default tiny)")->excludes(m);
  cmd->add_option("--train-rows", a->o.train_rows, "batch rows of the training measurement")
      ->check(kPositive)
      ->capture_default_str();
  cmd->add_option("--train-steps", a->o.train_steps, "timed training steps; 0: the matmul peak alone, no training")
      ->check(kNonNegative)
      ->capture_default_str();
  cmd->add_option("--decode-windows", a->o.decode_windows, "context lengths for decoding, in windows; 0: none")
      ->check(kNonNegative)
      ->capture_default_str();
  cmd->add_option("--decode-tokens", a->o.decode_tokens, "timed tokens per context length")->check(kPositive);
  cmd->add_option("--attention-windows", a->o.attention_windows,
                  "window sizes W at which a training step of 2W tokens is measured with the dense and the "
                  "blockwise attention (peak memory, time); 0: none")
      ->default_str("512 2048");
  cmd->add_option("--profile", a->o.profile_dir,
                  "directory for Chrome traces (chrome://tracing, Perfetto) of one training step (train_step.json; "
                  "bfloat16: train_step_bfloat16.json) and 16 decoded tokens in each weight format (decode.json, decode_bfloat16_weights.json, "
                  "decode_int8_weights.json)");
  cmd->add_flag("--json", a->json, "print one JSON object");
  cmd->callback([a] {
    if (a->o.model_dir.empty()) a->o.config = preset(a->preset);
    if (a->o.attention_windows == std::vector<int64_t>{0}) a->o.attention_windows.clear();
    if (a->o.decode_windows == std::vector<int64_t>{0}) a->o.decode_windows.clear();
    const auto j = run_benchmarks(a->o);
    if (a->json) {
      std::cout << j.dump(2) << "\n";
      return;
    }
    const auto& m = j["machine"];
    std::printf("%s (AMX %s), threads %d, oneDNN float32 %s, bfloat16 products: %s\n",
                m["cpu_model"].get<std::string>().c_str(), m["amx"].get<bool>() ? "yes" : "no", j["threads"].get<int>(),
                j["onednn_float32"].get<bool>() ? "on" : "off", j["onednn_bfloat16_products"].get<std::string>().c_str());
    const double others = m["background_cpu_share"].get<double>();
    if (others > 0.1)
      std::printf("note: other processes kept %.0f%% of the CPUs busy before the run: these figures will be low\n",
                  100 * others);
    std::printf("%-34s %12s\n", "measure", "value");
    const auto train = j.value("train", nlohmann::json::object());  // absent with --train-steps 0
    const auto limits = j.value("compute_flops_per_s", nlohmann::json::object());
    for (const auto& [k, v] : limits.items()) {
      std::printf("%-34s %9.1f GFLOP/s  (%s on registers alone", ("compute limit " + k).c_str(), v.get<double>() / 1e9,
                  k == "float32" ? "FMA" : "AMX tile products");
      if (j["matmul_flops_per_s"].contains(k))
        std::printf("; the matmul peak is %.0f%% of it", 100 * j["matmul_flops_per_s"][k].get<double>() / v.get<double>());
      std::printf(")\n");
    }
    for (const auto& [k, v] : j["matmul_flops_per_s"].items()) {
      std::printf("%-34s %9.1f GFLOP/s", ("matmul peak " + k).c_str(), v.get<double>() / 1e9);
      if (train.contains(k)) {
        const auto& both = j["matmul_flops_per_s_before_after"][k];
        std::printf("  (before the training steps %.1f, after %.1f%s)", both[0].get<double>() / 1e9,
                    both[1].get<double>() / 1e9,
                    train[k]["peak_moved"].get<bool>() ? ": the machine's speed changed, MFU is uncertain" : "");
      }
      std::printf("\n");
    }
    for (const auto& [k, v] : train.items()) {
      std::printf("%-34s %9.1f tok/s  (MFU %.0f%%, against the rate probed between the steps %.0f%%", ("train " + k).c_str(),
                  v["tokens_per_s"].get<double>(), 100 * v["mfu"].get<double>(), 100 * v["mfu_probed"].get<double>());
      if (v.contains("products_mfu"))
        std::printf("; products %.0f%% of the step, at %.0f%% of the peak", 100 * v["products_share"].get<double>(),
                    100 * v["products_mfu"].get<double>());
      if (v.contains("mfu_of_limit"))
        std::printf("; %.0f%% of the compute limit", 100 * v["mfu_of_limit"].get<double>());
      std::printf(")\n");
    }
    std::printf("%-34s %9.1f tok/s\n", "forward float32", j["forward_tokens_per_s"].get<double>());
    const double bandwidth = j["read_bytes_per_s"].get<double>();
    std::printf("%-34s %9.1f GB/s  (%s; 4 kB pages: %.1f)\n", "memory read bandwidth", bandwidth / 1e9,
                m["huge_pages"].get<bool>() ? "2 MB pages" : "no huge pages given", j["read_bytes_per_s_4k_pages"].get<double>() / 1e9);
    for (const auto& [key, weights] : {std::pair{"decode", "float32"}, std::pair{"decode_bfloat16_weights", "bfloat16"},
                                       std::pair{"decode_int8_weights", "int8"}}) {
      if (!j.contains(key)) continue;
      const double bytes = j["decode_weight_bytes"][weights].get<double>();
      std::printf("%-34s %9.2f ms/token  (%.0f MB of weights / bandwidth)\n",
                  (std::string("decode floor, ") + weights + " weights").c_str(), 1000 * bytes / bandwidth, bytes / 1e6);
      for (const auto& d : j[key]) {
        const double cache = d["attended_bytes_per_token"].get<double>();
        std::printf("%-34s %9.2f ms/token  (median %.2f; floor with the %.0f MB of keys/values read, at the best %.1f GB/s "
                    "measured: %.2f; prefill %.0f tok/s; first token, opening the window: %.1f ms)\n",
                    ("decode @" + std::to_string(d["context_windows"].get<int64_t>()) + " windows, " + weights).c_str(),
                    d["decode_ms_per_token"].get<double>(), d["decode_ms_per_token_median"].get<double>(), cache / 1e6,
                    d["read_bytes_per_s"].get<double>() / 1e9, d["floor_ms_per_token"].get<double>(),
                    d["prefill_tokens_per_s"].get<double>(), d["first_token_ms"].get<double>());
      }
    }
    if (j.contains("attention_step"))
      for (const auto& s : j["attention_step"]) {
        const auto label = "train step 2x" + std::to_string(s["window"].get<int64_t>()) + " tokens, peak";
        const auto& dense = s["dense"];
        const double blocks_mb = s["blocks"]["peak_bytes"].get<double>() / 1e6, blocks_s = s["blocks"]["seconds"].get<double>();
        if (dense.contains("skipped"))
          std::printf("%-34s %9.0f MB by blocks (%.1f s); dense not run: %s\n", label.c_str(), blocks_mb, blocks_s,
                      dense["skipped"].get<std::string>().c_str());
        else
          std::printf("%-34s %9.0f MB dense, %.0f MB by blocks (%.1f s, %.1f s)\n", label.c_str(),
                      dense["peak_bytes"].get<double>() / 1e6, blocks_mb, dense["seconds"].get<double>(), blocks_s);
      }
    std::printf("%-34s %9.1f MB\n", "weights", j["weight_bytes"].get<double>() / 1e6);
    std::printf("%-34s %9.1f MB\n", "peak resident memory", j["peak_rss_bytes"].get<double>() / 1e6);
  });
}

}  // namespace bakallm::cli
