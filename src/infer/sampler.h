// Picks the next token from logits: repetition penalty, temperature (0 is
// greedy), top-k, top-p (nucleus), min-p, then a draw from its own seeded RNG.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include <torch/torch.h>

namespace bakallm {

struct SamplingOptions {
  double temperature = 0.8;     // 0: argmax
  int64_t top_k = 0;            // 0: off
  double top_p = 1.0;           // in (0, 1]; 1: off
  double min_p = 0.0;           // in [0, 1); 0: off
  double repeat_penalty = 1.0;  // 1: off; > 1 discourages tokens already in the history
  uint64_t seed = 0;

  void validate() const;  // throws Error naming the bad option
};

// The tokens a draw can pick from probabilities P [V]: every token, in id
// order, when no filter is on; else the shortest of the prefixes (by
// descending probability, ties by id) that top-k, top-p (the first whose mass
// reaches top_p) and min-p (at least min_p x the largest) keep, in an order
// that depends only on P. NaN probabilities are never kept.
std::vector<int64_t> sampling_support(const float* p, int64_t V, const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(SamplingOptions options);
  // logits: [V]. HISTORY: the tokens the penalty applies to.
  int64_t sample(const torch::Tensor& logits, const std::vector<int64_t>& history = {});

 private:
  SamplingOptions o_;
  std::mt19937_64 rng_;
};

}  // namespace bakallm
