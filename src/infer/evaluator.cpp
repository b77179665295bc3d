#include "infer/evaluator.h"

#include <chrono>

#include "data/shard.h"
#include "util/error.h"

namespace bakallm {

void EvalStats::add(const EvalStats& o) {
  loss_sum += o.loss_sum;
  tokens += o.tokens;
  documents += o.documents;
  nonfinite += o.nonfinite;
  seconds += o.seconds;
}

EvalStats evaluate_document(BakaLM& model, const torch::Tensor& doc, int64_t windows_per_call) {
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  const auto device = model->embed_out->weight.device();
  const int64_t n = doc.size(0);
  const int64_t piece = model->config().window_size * std::max<int64_t>(1, windows_per_call);
  EvalStats stats;
  stats.documents = 1;
  State state;
  for (int64_t p = 0; p + 1 < n; p += piece) {
    // Inputs [p, p+len); targets [p+1, p+len+1) clipped to the document.
    const int64_t len = std::min(piece, n - p);
    const int64_t scored = std::min(len, n - 1 - p);
    auto ids = doc.narrow(0, p, len).unsqueeze(0).to(device);             // [1, len]
    auto out = model(ids, std::move(state));
    state = std::move(out.state);
    auto logits = out.logits[0].narrow(0, 0, scored).to(torch::kFloat);   // [scored, V]
    auto target = doc.narrow(0, p + 1, scored).to(device);                // [scored]
    auto losses = torch::nn::functional::cross_entropy(
        logits, target, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    auto finite = torch::isfinite(losses);
    stats.loss_sum += losses.masked_select(finite).sum().item<double>();
    stats.nonfinite += scored - finite.sum().item<int64_t>();
    stats.tokens += scored;
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

EvalStats evaluate_shards(BakaLM& model, const std::vector<std::string>& shards, uint32_t bos_id,
                          int64_t windows_per_call, const std::function<void(const EvalStats&)>& progress,
                          int64_t max_tokens) {
  std::vector<ShardReader> readers;
  for (const auto& path : shards) readers.emplace_back(path);  // validate all before any work
  const int64_t vocab = model->config().vocab_size;
  EvalStats total;
  for (const auto& shard : readers) {
    for (const auto& span : shard.documents(bos_id)) {
      int64_t length = span.length;
      if (max_tokens > 0) length = std::min(length, max_tokens - total.tokens + 1);
      auto doc = shard.tokens(span.begin, length);
      const int64_t max_id = length ? doc.max().item<int64_t>() : 0;
      if (max_id >= vocab)
        throw file_error(shard.path(), "token id " + std::to_string(max_id) + " is outside the model's vocabulary of " +
                                           std::to_string(vocab));
      total.add(evaluate_document(model, doc, windows_per_call));
      if (progress) progress(total);
      if (max_tokens > 0 && total.tokens >= max_tokens) return total;
    }
  }
  return total;
}

}  // namespace bakallm
