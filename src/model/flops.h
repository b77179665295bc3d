// Model arithmetic: parameters by group and FLOPs per token, from the Config.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "model/baka_lm.h"
#include "model/config.h"

namespace bakallm {

// (group, count) for: embed_in, layers, memory_solidifer, memory/sep tokens,
// lm_norm, embed_out; then "total".
std::vector<std::pair<std::string, int64_t>> parameter_groups(BakaLM& model);

struct FlopCount {
  double forward_per_token;   // matmul FLOPs (2 per multiply-add), steady state (cache full)
  double training_per_token;  // forward + backward ≈ 3 × forward
  double attention_share;     // fraction of forward spent in q·Kᵀ and weights·V
};

// Counts the matmuls of one extended window (W + 2M + 2 rows attending to
// themselves and the previous window's rows), the solidifier and the head,
// divided by the W text tokens of the window.
FlopCount flops_per_token(const Config& config);

}  // namespace bakallm
