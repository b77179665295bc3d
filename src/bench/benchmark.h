// `bakallm bench`: what this machine does with a model. Every figure is
// measured here, now; ratios within one run are what compare.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace bakallm {

struct BenchOptions {
  Config config;
  std::string model_dir;             // weights to use (else random init of config)
  int64_t train_rows = 4;            // batch rows of the training measurement
  int64_t train_steps = 2;           // timed steps (after one warm-up)
  std::vector<int64_t> decode_windows = {1, 8, 64};  // context lengths, in windows
  int64_t decode_tokens = 32;        // timed tokens per context length
  bool bf16 = true;                  // also measure bfloat16 products
  // Window sizes at which one training step of two windows (the second with
  // its cache) is measured with the dense attention and the blockwise one:
  // peak memory and time (ops/block_attention.h). Empty: not measured.
  std::vector<int64_t> attention_windows = {512, 2048};
  std::string profile_dir;           // non-empty: Chrome traces of one float32 training step
                                     // (train_step.json) and 16 decoded tokens (decode.json)
};

// The ratio between the peak measured before the training steps and after
// above which bench flags the run (train.<dtype>.peak_moved): MFU then
// depends on which moments the steps ran in.
constexpr double kPeakMoved = 1.3;

// Runs every measurement and returns them as JSON (see README for the fields).
nlohmann::json run_benchmarks(const BenchOptions& options);

// The machine a figure was taken on, and how busy other processes kept it.
struct MachineLoad {
  std::string cpu_model;     // /proc/cpuinfo's model name
  bool amx = false, avx512_bf16 = false;
  double busy_share = 0;     // of all cores, used by others while this process idled
  double loadavg_1m = 0;
};
MachineLoad measure_background_load(double seconds = 0.5);

// Peak resident memory of this process so far, in bytes.
int64_t peak_rss_bytes();

// Resident memory now, and its peak since the last reset_peak_rss(), in bytes
// (Linux: /proc/self/status). reset_peak_rss() first hands the allocator's free
// pages back to the kernel, so that what runs next shows its own peak.
int64_t rss_bytes();
int64_t peak_rss_since_reset_bytes();
void reset_peak_rss();

}  // namespace bakallm
