// Mean next-token loss of a model over documents, under two protocols:
//   stream   each document is one stream: windows in order, the state
//            (memory, caches, position) carried across them (BakaLLM's own)
//   sliding  windows of `context` tokens with stride context/2, no state
//            carried, each token scored once (the fair way to compare with
//            fixed-context models)
//   author   the author's bench_baka.py: windows of `context` tokens starting
//            at 0, context/2, context, ...; the first scores every target,
//            each later one the targets of its second half; each window is
//            one fresh model call; the result is the mean over all windows of
//            all documents of each window's mean loss (NaN windows counted and
//            left out). He used context 655360 for BakaLLM: a whole article.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/torch.h>

#include "data/tokenizer.h"
#include "model/baka_lm.h"

namespace bakallm {

struct CorpusOptions;
class Communicator;

enum class EvalProtocol { kStream, kSliding, kAuthor };
EvalProtocol parse_protocol(const std::string& name);  // "stream", "sliding", "author"
constexpr int64_t kAuthorContext = 655360;             // the author's n_ctx for BakaLLM

struct EvalOptions {
  EvalProtocol protocol = EvalProtocol::kStream;
  int64_t context = 0;           // sliding, author: window length (>= 2)
  int64_t windows_per_call = 1;  // stream: model windows per forward call
  int64_t max_tokens = 0;        // > 0: stop once this many tokens are scored
  int rank = 0, ranks = 1;       // data parallel: score documents rank, rank + ranks, ... (then sum_over_ranks)
};

struct EvalStats {
  double loss_sum = 0;         // Σ −log p(token) over finite token losses
  int64_t tokens = 0;          // predicted tokens (a document of n tokens has n − 1)
  int64_t documents = 0;
  int64_t nonfinite = 0;       // token losses that were NaN or ±Inf (left out of loss_sum)
  double window_loss_sum = 0;  // Σ over windows of their mean loss: model windows of W tokens,
  int64_t windows = 0;         // or the author protocol's windows of `context` tokens
  int64_t nonfinite_windows = 0;  // windows whose mean was NaN/Inf (left out)
  bool window_mean = false;    // the protocol's loss is the mean over windows (author)
  double seconds = 0;

  // The protocol's figure: the token-weighted mean, or for the author
  // protocol the mean over windows.
  double loss() const { return window_mean ? window_loss() : token_loss(); }
  double token_loss() const { return tokens > nonfinite ? loss_sum / double(tokens - nonfinite) : NAN; }
  double perplexity() const { return std::exp(loss()); }
  double window_loss() const { return windows ? window_loss_sum / double(windows) : NAN; }
  void add(const EvalStats& other);
  nlohmann::json to_json() const;  // loss, ppl, window_loss, tokens, documents, nonfinite, seconds, tokens_per_second
  std::string summary() const;     // one line of the same

};

// Every rank's stats summed (seconds: the slowest rank's): the figures of one
// process that scored every document.
EvalStats sum_over_ranks(const EvalStats& mine, Communicator& comm);

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

// Every document of text FILES (read_corpus), each tokenized on its own with
// TOKENIZER, BOS first as BOS says (auto: as the tokenizer does).
EvalStats evaluate_texts(BakaLM& model, const Tokenizer& tokenizer, const std::vector<std::string>& files,
                         const CorpusOptions& corpus, const EvalOptions& options,
                         const std::function<void(const EvalStats&)>& progress = {},
                         BosPolicy bos = BosPolicy::kAuto);

}  // namespace bakallm
