// Mean next-token loss of a model over documents, under two protocols:
//   stream   each document is one stream: windows in order, the state
//            (memory, caches, position) carried across them (BakaLLM's own)
//   sliding  windows of `context` tokens with stride context/2, no state
//            carried, each token scored once (the fair way to compare with
//            fixed-context models)
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/torch.h>

#include "model/baka_lm.h"

namespace bakallm {

class Tokenizer;
struct CorpusOptions;

enum class EvalProtocol { kStream, kSliding };
EvalProtocol parse_protocol(const std::string& name);  // "stream", "sliding"

struct EvalOptions {
  EvalProtocol protocol = EvalProtocol::kStream;
  int64_t context = 0;           // sliding: window length (>= 2)
  int64_t windows_per_call = 1;  // stream: model windows per forward call
  int64_t max_tokens = 0;        // > 0: stop once this many tokens are scored
};

struct EvalStats {
  double loss_sum = 0;         // Σ −log p(token) over finite token losses
  int64_t tokens = 0;          // predicted tokens (a document of n tokens has n − 1)
  int64_t documents = 0;
  int64_t nonfinite = 0;       // token losses that were NaN or ±Inf (left out of loss_sum)
  double window_loss_sum = 0;  // Σ over model windows of their mean loss (the author's average)
  int64_t windows = 0;
  double seconds = 0;

  double loss() const { return tokens > nonfinite ? loss_sum / double(tokens - nonfinite) : NAN; }
  double perplexity() const { return std::exp(loss()); }
  double window_loss() const { return windows ? window_loss_sum / double(windows) : NAN; }
  void add(const EvalStats& other);
  nlohmann::json to_json() const;  // loss, ppl, window_loss, tokens, documents, nonfinite, seconds, tokens_per_second
  std::string summary() const;     // one line of the same

};

// −log p of tokens 1..n−1 of DOC ([n] int64) under the protocol.    -> [n − 1]
torch::Tensor token_losses(BakaLM& model, const torch::Tensor& doc, const EvalOptions& options);

EvalStats evaluate_document(BakaLM& model, const torch::Tensor& doc, const EvalOptions& options);
EvalStats evaluate_document(BakaLM& model, const torch::Tensor& doc, int64_t windows_per_call = 4);

// Every document of every shard (split at BOS). PROGRESS, if set, is called
// after each document with the running totals.
EvalStats evaluate_shards(BakaLM& model, const std::vector<std::string>& shards, uint32_t bos_id,
                          const EvalOptions& options, const std::function<void(const EvalStats&)>& progress = {});
EvalStats evaluate_shards(BakaLM& model, const std::vector<std::string>& shards, uint32_t bos_id,
                          int64_t windows_per_call = 4, const std::function<void(const EvalStats&)>& progress = {},
                          int64_t max_tokens = 0);

// Documents given as token lists (e.g. text tokenized on the fly).
EvalStats evaluate_documents(BakaLM& model, const std::function<bool(torch::Tensor&)>& next_document,
                             const EvalOptions& options, const std::function<void(const EvalStats&)>& progress = {});

// Every document of text FILES (read_corpus), tokenized with TOKENIZER, BOS first.
EvalStats evaluate_texts(BakaLM& model, const Tokenizer& tokenizer, const std::vector<std::string>& files,
                         const CorpusOptions& corpus, const EvalOptions& options,
                         const std::function<void(const EvalStats&)>& progress = {});

}  // namespace bakallm
