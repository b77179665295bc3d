#include "eval/evaluator.h"

#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "data/corpus.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "dist/communicator.h"
#include "ops/cross_entropy.h"
#include "util/clock.h"
#include "util/error.h"

namespace bakallm {

namespace {

// −log p(doc[t]) for the COUNT targets t = FIRST, FIRST+1, ..., from one
// model call on doc[BEGIN, BEGIN+LEN) continuing STATE (updated); each target
// is predicted by the row before it, which the call must hold. The head runs
// only on those rows, 1024 at a time, so no [LEN, V] logits ever exist.
torch::Tensor call_losses(BakaLM& model, const torch::Tensor& doc, int64_t begin, int64_t len, int64_t first,
                          int64_t count, State& state) {
  const auto device = model->embed_out->weight.device();
  auto net = model->trunk(doc.narrow(0, begin, len).unsqueeze(0).to(device), std::move(state));
  state = std::move(net.state);
  const auto rows = net.hidden[0].narrow(0, first - 1 - begin, count);  // [count, D]
  const auto targets = doc.narrow(0, first, count).to(device);
  auto out = torch::empty({count}, torch::kFloat);
  for (int64_t r = 0, chunk = 1024; r < count; r += chunk) {
    const int64_t m = std::min(chunk, count - r);
    out.narrow(0, r, m).copy_(cross_entropy_rows(model->head(rows.narrow(0, r, m)), targets.narrow(0, r, m)));
  }
  return out;
}

torch::Tensor author_losses(BakaLM& model, const torch::Tensor& doc, int64_t context, std::vector<double>& window_means) {
  if (context < 2) throw Error("--ctx must be at least 2 for the author protocol");
  const int64_t n = doc.size(0), half = context / 2;
  auto out = torch::empty({std::max<int64_t>(0, n - 1)}, torch::kFloat);
  for (int64_t begin = 0;; begin += half) {
    const int64_t end = std::min(begin + context, n);
    // The first target scored (a token index): every one in the first window,
    // then those of the window's last `half` tokens (its second half).
    const int64_t first = begin == 0 ? 1 : begin + context - half;
    if (first >= end) break;  // nothing left to score: the document ends
    State fresh;              // one fresh model call per window
    auto losses = call_losses(model, doc, begin, end - begin, first, end - first, fresh);
    out.narrow(0, first - 1, end - first).copy_(losses);
    window_means.push_back(losses.to(torch::kDouble).mean().item<double>());
  }
  return out;
}

torch::Tensor stream_losses(BakaLM& model, const torch::Tensor& doc, int64_t windows_per_call) {
  const int64_t n = doc.size(0);
  const int64_t piece = model->config().window_size * std::max<int64_t>(1, windows_per_call);
  auto out = torch::empty({std::max<int64_t>(0, n - 1)}, torch::kFloat);
  State state;
  for (int64_t p = 0; p + 1 < n; p += piece) {
    // Inputs [p, p+len); targets [p+1, p+len+1) clipped to the document.
    const int64_t len = std::min(piece, n - p);
    const int64_t scored = std::min(len, n - 1 - p);
    out.narrow(0, p, scored).copy_(call_losses(model, doc, p, len, p + 1, scored, state));
  }
  return out;
}

torch::Tensor sliding_losses(BakaLM& model, const torch::Tensor& doc, int64_t context) {
  if (context < 2) throw Error("--ctx must be at least 2 for the sliding protocol");
  const int64_t n = doc.size(0), stride = std::max<int64_t>(1, context / 2);
  auto out = torch::empty({std::max<int64_t>(0, n - 1)}, torch::kFloat);
  int64_t scored_to = 1;  // targets [1, scored_to) are done
  for (int64_t begin = 0; scored_to < n; begin += stride) {
    const int64_t end = std::min(begin + context, n);
    const int64_t first = std::max(scored_to, begin + 1);  // first target scored in this window
    if (first < end) {
      State fresh;  // no state carried between windows
      out.narrow(0, first - 1, end - first).copy_(call_losses(model, doc, begin, end - begin, first, end - first, fresh));
      scored_to = end;
    }
  }
  return out;
}

EvalStats stats_of(const torch::Tensor& losses, int64_t window) {
  EvalStats s;
  s.documents = 1;
  s.tokens = losses.size(0);
  auto finite = torch::isfinite(losses);
  s.loss_sum = losses.masked_select(finite).sum().item<double>();
  s.nonfinite = s.tokens - finite.sum().item<int64_t>();
  for (int64_t p = 0; p < s.tokens; p += window) {
    auto w = losses.narrow(0, p, std::min(window, s.tokens - p));
    auto ok = w.masked_select(torch::isfinite(w));
    if (ok.numel() == 0) continue;
    s.window_loss_sum += ok.mean().item<double>();
    ++s.windows;
  }
  return s;
}

}  // namespace

EvalProtocol parse_protocol(const std::string& name) {
  if (name == "stream") return EvalProtocol::kStream;
  if (name == "sliding") return EvalProtocol::kSliding;
  if (name == "author") return EvalProtocol::kAuthor;
  throw Error("unknown protocol '" + name + "' (stream, sliding, author)");
}

namespace {

// The stats that add up (add() and sum_over_ranks() both go through these lists).
constexpr double EvalStats::*kSummedReals[] = {&EvalStats::loss_sum, &EvalStats::window_loss_sum};
constexpr int64_t EvalStats::*kSummedCounts[] = {&EvalStats::tokens, &EvalStats::documents, &EvalStats::nonfinite,
                                                  &EvalStats::windows, &EvalStats::nonfinite_windows};

}  // namespace

void EvalStats::add(const EvalStats& o) {
  for (auto f : kSummedReals) this->*f += o.*f;
  for (auto f : kSummedCounts) this->*f += o.*f;
  window_mean = window_mean || o.window_mean;
  seconds += o.seconds;
}

EvalStats sum_over_ranks(const EvalStats& s, Communicator& comm) {
  std::vector<double> packed;  // counts travel as doubles: exact below 2^53
  for (auto f : kSummedReals) packed.push_back(s.*f);
  for (auto f : kSummedCounts) packed.push_back(static_cast<double>(s.*f));
  packed.push_back(s.window_mean ? 1.0 : 0.0);
  auto sums = torch::tensor(packed, torch::kDouble);
  comm.allreduce_sum(sums);
  const auto seconds = comm.allgather_rows(torch::tensor({s.seconds}, torch::kDouble));
  const double* v = sums.data_ptr<double>();
  EvalStats t;
  for (auto f : kSummedReals) t.*f = *v++;
  for (auto f : kSummedCounts) t.*f = static_cast<int64_t>(*v++);
  t.window_mean = *v > 0;
  t.seconds = seconds.max().item<double>();  // the slowest rank's
  return t;
}

torch::Tensor token_losses(BakaLM& model, const torch::Tensor& doc, const EvalOptions& o) {
  torch::NoGradGuard no_grad;
  if (o.protocol == EvalProtocol::kAuthor) {
    std::vector<double> means;
    return author_losses(model, doc, o.context, means);
  }
  return o.protocol == EvalProtocol::kStream ? stream_losses(model, doc, o.windows_per_call)
                                             : sliding_losses(model, doc, o.context);
}

EvalStats evaluate_document(BakaLM& model, const torch::Tensor& doc, const EvalOptions& o) {
  const auto start = Clock::now();
  EvalStats s;
  if (o.protocol == EvalProtocol::kAuthor) {
    torch::NoGradGuard no_grad;
    std::vector<double> means;
    s = stats_of(author_losses(model, doc, o.context, means), model->config().window_size);
    s.window_mean = true;
    s.window_loss_sum = 0;
    s.windows = 0;
    for (double m : means) {
      if (std::isfinite(m)) {
        s.window_loss_sum += m;
        ++s.windows;
      } else {
        ++s.nonfinite_windows;
      }
    }
  } else {
    s = stats_of(token_losses(model, doc, o), model->config().window_size);
  }
  s.seconds = seconds_since(start);
  return s;
}

EvalStats evaluate_document(BakaLM& model, const torch::Tensor& doc, int64_t windows_per_call) {
  EvalOptions o;
  o.windows_per_call = windows_per_call;
  return evaluate_document(model, doc, o);
}

EvalStats evaluate_documents(BakaLM& model, const std::function<bool(torch::Tensor&)>& next_document,
                             const EvalOptions& o, const std::function<void(const EvalStats&)>& progress) {
  const int64_t vocab = model->config().vocab_size;
  EvalStats total;
  torch::Tensor doc;
  if (o.ranks > 1 && o.max_tokens > 0)  // where the budget ends depends on every rank's documents
    throw Error("--max-tokens cannot be split between ranks: evaluate in one process");
  for (int64_t index = 0; next_document(doc); ++index) {
    if (index % o.ranks != o.rank) continue;  // another rank's document
    if (o.max_tokens > 0 && doc.size(0) > o.max_tokens - total.tokens + 1)
      doc = doc.narrow(0, 0, std::max<int64_t>(0, o.max_tokens - total.tokens + 1));
    if (doc.size(0) > 0 && doc.max().item<int64_t>() >= vocab)
      throw Error("token id " + std::to_string(doc.max().item<int64_t>()) + " is outside the model's vocabulary of " +
                  std::to_string(vocab));
    total.add(evaluate_document(model, doc, o));
    if (progress) progress(total);
    if (o.max_tokens > 0 && total.tokens >= o.max_tokens) break;
  }
  return total;
}

EvalStats evaluate_shards(BakaLM& model, const std::vector<std::string>& shards, uint32_t bos_id,
                          const EvalOptions& o, const std::function<void(const EvalStats&)>& progress) {
  std::vector<ShardReader> readers;
  for (const auto& path : shards) readers.emplace_back(path);  // validate all before any work
  size_t r = 0, d = 0;
  std::vector<ShardReader::Span> docs = readers.empty() ? std::vector<ShardReader::Span>{} : readers[0].documents(bos_id);
  auto next = [&](torch::Tensor& doc) {
    while (r < readers.size() && d >= docs.size()) {
      if (++r < readers.size()) docs = readers[r].documents(bos_id);
      d = 0;
    }
    if (r >= readers.size()) return false;
    doc = readers[r].tokens(docs[d].begin, docs[d].length);
    ++d;
    return true;
  };
  try {
    return evaluate_documents(model, next, o, progress);
  } catch (const Error& e) {
    if (r < readers.size()) throw file_error(readers[r].path(), e.what());
    throw;
  }
}

EvalStats evaluate_shards(BakaLM& model, const std::vector<std::string>& shards, uint32_t bos_id,
                          int64_t windows_per_call, const std::function<void(const EvalStats&)>& progress,
                          int64_t max_tokens) {
  EvalOptions o;
  o.windows_per_call = windows_per_call;
  o.max_tokens = max_tokens;
  return evaluate_shards(model, shards, bos_id, o, progress);
}

EvalStats evaluate_texts(BakaLM& model, const Tokenizer& tok, const std::vector<std::string>& files,
                         const CorpusOptions& corpus, const EvalOptions& o,
                         const std::function<void(const EvalStats&)>& progress, BosPolicy bos) {
  std::vector<torch::Tensor> docs;
  for (const auto& f : files)
    read_corpus(f, corpus, [&](std::string&& d) {
      const auto ids = tok.encode_document(d, bos);
      docs.push_back(torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong));
    });
  if (docs.empty()) throw Error(files.at(0) + ": no documents (empty or whitespace only)");
  size_t i = 0;
  auto next = [&](torch::Tensor& out) {
    if (i >= docs.size()) return false;
    out = docs[i++];
    return true;
  };
  return evaluate_documents(model, next, o, progress);
}

nlohmann::json EvalStats::to_json() const {
  return {{"loss", loss()},   {"ppl", perplexity()},    {"window_loss", window_loss()},
          {"token_loss", token_loss()}, {"windows", windows}, {"nonfinite_windows", nonfinite_windows},
          {"tokens", tokens}, {"documents", documents}, {"nonfinite", nonfinite},
          {"seconds", seconds}, {"tokens_per_second", tokens / std::max(seconds, 1e-9)}};
}

std::string EvalStats::summary() const {
  char line[320];
  if (window_mean) {
    std::snprintf(line, sizeof line,
                  "loss %.6f  ppl %.4f  (mean over %lld windows; %lld NaN windows left out)  token-weighted loss "
                  "%.6f  tokens %lld  documents %lld",
                  loss(), perplexity(), (long long)windows, (long long)nonfinite_windows, token_loss(),
                  (long long)tokens, (long long)documents);
    return line;
  }
  std::snprintf(line, sizeof line,
                "loss %.6f  ppl %.4f  window-average loss %.6f  tokens %lld  documents %lld  nonfinite %lld",
                loss(), perplexity(), window_loss(), (long long)tokens, (long long)documents, (long long)nonfinite);
  return line;
}

}  // namespace bakallm
