// The training loop: streamed batches with the state carried from step to
// step, AdamW, warmup + cosine, clipping, accumulation, float32 or bfloat16
// products, validation, samples, metrics, plots, checkpoints, and a clean stop
// on SIGINT/SIGTERM (finish the step, checkpoint, return).
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"
#include "train/optimizer.h"

namespace bakallm {

class Communicator;

struct TrainOptions {
  // What to train: a model directory to continue from, else a config.
  std::string init_model;      // --model DIR (weights + config)
  Config config;               // used when init_model is empty
  std::string data_dir;        // output of `bakallm tokenize` (manifest.json)
  std::string run_dir;         // RUN
  bool resume = false;         // continue from RUN's newest checkpoint

  int64_t steps = 1000;
  int64_t batch_rows = 8;             // B
  int64_t windows_per_step = 0;       // k; 0: the config's detach_every
  std::string packing = "documents";  // or "stream": short documents back to back, no padding
  int64_t grad_accum = 1;
  OptimizerOptions optimizer;
  double min_lr_ratio = 0.1;
  int64_t warmup = 100;
  double clip = 1.0;
  std::string dtype = "float32";      // or "bfloat16": products in bf16, master weights float32;
                                      // or "auto": the faster on this CPU (a resumed run keeps its own)
  uint64_t seed = 0;

  int64_t eval_every = 100;
  int64_t eval_tokens = 32768;        // validation tokens per evaluation
  int64_t checkpoint_every = 200;
  int keep_checkpoints = 3;
  std::string prompt = "Once upon a time";
  int64_t sample_tokens = 48;
  double max_minutes = 0;             // stop (with a checkpoint) after this long; 0: no limit
  bool minutes_span_resumes = false;  // max_minutes counts the run's time over every resumed part (an experiment's budget)
  bool progress = true;

  // Data parallel (src/dist): this process is one rank of COMM's job; every
  // rank is given the same options. batch_rows is per rank: the global batch
  // is batch_rows x ranks, and the run is the one a single process with the
  // global batch makes. Rank 0 writes RUN; the others only read it (resume).
  Communicator* comm = nullptr;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t tokens = 0;    // text tokens trained on, over every resumed part
  double seconds = 0;    // wall time of the run, over every resumed part
  double last_loss = 0, first_loss = 0, val_loss = 0;
  bool interrupted = false;
  std::string last_checkpoint;
  std::string sample;
  // Data parallel: seconds per step to sum the gradients with nothing else
  // running, and seconds per step waited for them after the backward.
  double comm_alone = 0, comm_waited = 0;
};

TrainResult train(const TrainOptions& options);

// The line train() prints when --dtype bfloat16 would be slower than float32
// on this CPU (no AMX: BENCHMARKS.md), given the two measured product rates;
// empty when bfloat16 is at least as fast.
std::string bfloat16_advice(double float32_flops, double bfloat16_flops);

// OPTIONS.dtype made concrete: "auto" is the run's recorded dtype when it
// resumes, else bfloat16 where its products measure over 1.2x float32's (AMX).
std::string resolve_dtype(const TrainOptions& options, bool on_cpu);

// Set by SIGINT/SIGTERM once train() has installed its handlers.
bool stop_requested();

}  // namespace bakallm
