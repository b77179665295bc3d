// A training checkpoint, RUN/checkpoints/step_N/: a model directory
// (config.json, model.safetensors, tokenizer.model) plus what an exact resume
// needs: optimizer.pt (AdamW moments), stream.safetensors (each batch row's
// memory and caches), rng.safetensors (torch's CPU generator) and
// train_state.json (step, tokens, loader position). Written under a temporary
// name and renamed, so a checkpoint directory that exists is complete.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "model/baka_lm.h"
#include "model/state.h"

namespace bakallm {

struct TrainProgress {
  int64_t step = 0;        // optimizer steps done
  int64_t tokens = 0;      // predicted tokens seen
  double seconds = 0;      // training time so far
  nlohmann::json loader;   // Loader::state()
  int64_t world_size = 1;  // ranks of the run that wrote it (its stream holds every rank's rows)
};

void save_checkpoint(const std::string& dir, BakaLM& model, torch::optim::Optimizer& optimizer,
                     const TrainProgress& progress, const State& stream, const std::string& tokenizer);

// Loads weights, optimizer state and RNG into the given objects; returns the
// progress and fills STREAM.
TrainProgress load_checkpoint(const std::string& dir, BakaLM& model, torch::optim::Optimizer& optimizer,
                              State& stream);

// RUN/checkpoints/step_N directories, oldest first.
std::vector<std::string> list_checkpoints(const std::string& run_dir);
// Removes all but the newest KEEP (each renamed away first, then deleted).
void prune_checkpoints(const std::string& run_dir, int keep);
// Removes what killed processes left in RUN_DIR and its checkpoints/ (a
// step_N.tmp.PID being written, a step_N.pruned.PID being deleted, a file's
// .tmp.PID). Returns how many.
int remove_checkpoint_orphans(const std::string& run_dir);

}  // namespace bakallm
