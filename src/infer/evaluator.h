// Mean next-token loss of a model over documents, each read as one stream:
// windows are fed in order and the state (memory, caches, position) is
// carried from each to the next, as the model would see a long document.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/baka_lm.h"

namespace bakallm {

struct EvalStats {
  double loss_sum = 0;     // Σ −log p(token) over finite token losses
  int64_t tokens = 0;      // predicted tokens (a document of n tokens has n − 1)
  int64_t documents = 0;
  int64_t nonfinite = 0;   // token losses that were NaN or ±Inf (left out of loss_sum)
  double seconds = 0;

  double loss() const { return tokens > nonfinite ? loss_sum / double(tokens - nonfinite) : NAN; }
  double perplexity() const { return std::exp(loss()); }
  void add(const EvalStats& other);
};

// Scores DOC ([n] int64 token ids) as one stream, calling the model on
// WINDOWS_PER_CALL windows at a time.
EvalStats evaluate_document(BakaLM& model, const torch::Tensor& doc, int64_t windows_per_call = 4);

// Every document of every shard (split at BOS). PROGRESS, if set, is called
// after each document with the running totals.
// MAX_TOKENS > 0 stops after the document that reaches it.
EvalStats evaluate_shards(BakaLM& model, const std::vector<std::string>& shards, uint32_t bos_id,
                          int64_t windows_per_call = 4,
                          const std::function<void(const EvalStats&)>& progress = {}, int64_t max_tokens = 0);

}  // namespace bakallm
