#include "data/loader.h"

#include <algorithm>
#include <random>

#include <nlohmann/json.hpp>

#include "model/targets.h"
#include "util/error.h"

namespace bakallm {

Loader::Loader(LoaderOptions options, const Config& config) : o_(std::move(options)), window_(config.window_size) {
  if (o_.shards.empty()) throw Error("loader: no training shards");
  for (const auto& path : o_.shards) shards_.emplace_back(path);
  for (size_t s = 0; s < shards_.size(); ++s)
    for (const auto& span : shards_[s].documents(o_.bos_id))
      if (span.length >= 2) {  // a document needs something to predict
        docs_.push_back({s, span.begin, span.length});
        total_tokens_ += span.length;
      }
  if (docs_.empty()) throw Error("loader: the training shards hold no document of two or more tokens");
  rows_.resize(o_.rows);
  shuffle();
}

void Loader::shuffle() {
  order_.resize(docs_.size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(o_.seed * 1000003 + static_cast<uint64_t>(epoch_));
  std::shuffle(order_.begin(), order_.end(), rng);
}

int64_t Loader::take_document() {
  if (cursor_ >= static_cast<int64_t>(order_.size())) {
    ++epoch_;
    cursor_ = 0;
    shuffle();
  }
  return order_[cursor_++];
}

Packing parse_packing(const std::string& name) {
  if (name == "documents") return Packing::kDocuments;
  if (name == "stream") return Packing::kStream;
  throw Error("--packing must be documents or stream, got '" + name + "'");
}

Batch Loader::next() {
  const int64_t B = o_.rows, W = window_, k = o_.windows_per_step;
  Batch batch;
  batch.ids = torch::full({B, k * W}, static_cast<int64_t>(o_.bos_id), torch::kLong);
  batch.targets = torch::full({B, k * W}, kIgnoreIndex, torch::kLong);
  batch.resets = torch::zeros({B, k}, torch::kBool);
  auto ids = batch.ids.accessor<int64_t, 2>();
  auto targets = batch.targets.accessor<int64_t, 2>();
  auto resets = batch.resets.accessor<bool, 2>();
  const bool stream = o_.packing == Packing::kStream;
  int64_t filled_total = 0;
  for (int64_t b = 0; b < B; ++b) {
    Row& row = rows_[b];
    for (int64_t c = 0; c < k; ++c) {
      // documents: one document per window, from its start (reset) or where the row left it;
      // stream: documents back to back until the window is full, the state carried across.
      for (int64_t filled = 0; filled < W && (stream || filled == 0);) {
        const bool finished = row.doc < 0 || row.pos >= docs_[row.doc].length - (stream ? 0 : 1);
        if (finished) {
          if (row.doc < 0 || !stream) resets[b][c] = true;  // a row's first document starts fresh either way
          row.doc = take_document();
          row.pos = 0;
        }
        const Doc& d = docs_[row.doc];
        const auto& shard = shards_[d.shard];
        const int64_t n = std::min(W - filled, d.length - row.pos);
        for (int64_t i = 0; i < n; ++i) {
          ids[b][c * W + filled + i] = shard.token(d.begin + row.pos + i);
          if (row.pos + i + 1 < d.length) {
            targets[b][c * W + filled + i] = shard.token(d.begin + row.pos + i + 1);
            ++batch.tokens;
          }
        }
        row.pos += n;
        filled += n;
        filled_total += n;
      }
    }
  }
  batch.padding = 1.0 - static_cast<double>(filled_total) / static_cast<double>(B * k * W);
  return batch;
}

nlohmann::json Loader::state() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : rows_) rows.push_back({r.doc, r.pos});
  return {{"epoch", epoch_}, {"cursor", cursor_}, {"rows", rows}, {"documents", docs_.size()}, {"window", window_},
          {"packing", o_.packing == Packing::kStream ? "stream" : "documents"}};
}

void Loader::restore(const nlohmann::json& s) {
  if (s.at("documents").get<size_t>() != docs_.size() || s.at("rows").size() != rows_.size())
    throw Error("loader: the checkpoint was made on other data or another batch size");
  if (s.value("packing", std::string("documents")) != (o_.packing == Packing::kStream ? "stream" : "documents"))
    throw Error("loader: the checkpoint packed documents as " + s.value("packing", std::string("documents")) +
                "; give the same --packing to resume");
  if (s.value("window", window_) != window_)
    throw Error("loader: the checkpoint read windows of " + std::to_string(s.value("window", window_)) +
                " tokens, this model's window_size is " + std::to_string(window_));
  epoch_ = s.at("epoch").get<int64_t>();
  shuffle();
  cursor_ = s.at("cursor").get<int64_t>();
  for (size_t i = 0; i < rows_.size(); ++i) {
    rows_[i].doc = s["rows"][i][0].get<int64_t>();
    rows_[i].pos = s["rows"][i][1].get<int64_t>();
  }
}

}  // namespace bakallm
