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
  if (o_.local_rows == 0) o_.local_rows = o_.rows - o_.first_row;
  if (o_.first_row < 0 || o_.local_rows <= 0 || o_.first_row + o_.local_rows > o_.rows)
    throw Error("loader: rows [" + std::to_string(o_.first_row) + ", " + std::to_string(o_.first_row + o_.local_rows) +
                ") are not inside the batch of " + std::to_string(o_.rows));
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
  const int64_t B = o_.rows, W = window_, k = o_.windows_per_step, first = o_.first_row, mine = o_.local_rows;
  Batch batch;
  batch.ids = torch::full({mine, k * W}, static_cast<int64_t>(o_.bos_id), torch::kLong);
  batch.targets = torch::full({mine, k * W}, kIgnoreIndex, torch::kLong);
  batch.resets = torch::zeros({mine, k}, torch::kBool);
  auto ids = batch.ids.accessor<int64_t, 2>();
  auto targets = batch.targets.accessor<int64_t, 2>();
  auto resets = batch.resets.accessor<bool, 2>();
  const bool stream = o_.packing == Packing::kStream;
  int64_t filled_total = 0;
  for (int64_t b = 0; b < B; ++b) {  // every row is dealt; only this rank's are read
    Row& row = rows_[b];
    const bool own = b >= first && b < first + mine;
    const int64_t r = b - first;
    for (int64_t c = 0; c < k; ++c) {
      // documents: one document per window, from its start (reset) or where the row left it;
      // stream: documents back to back until the window is full, the state carried across.
      for (int64_t filled = 0; filled < W && (stream || filled == 0);) {
        const bool finished = row.doc < 0 || row.pos >= docs_[row.doc].length - (stream ? 0 : 1);
        if (finished) {
          if ((row.doc < 0 || !stream) && own) resets[r][c] = true;  // a row's first document starts fresh either way
          row.doc = take_document();
          row.pos = 0;
        }
        const Doc& d = docs_[row.doc];
        const auto& shard = shards_[d.shard];
        const int64_t n = std::min(W - filled, d.length - row.pos);
        const int64_t predicted = std::max<int64_t>(0, std::min(n, d.length - 1 - row.pos));  // the last token predicts nothing
        if (own) {
          for (int64_t i = 0; i < n; ++i) ids[r][c * W + filled + i] = shard.token(d.begin + row.pos + i);
          for (int64_t i = 0; i < predicted; ++i) targets[r][c * W + filled + i] = shard.token(d.begin + row.pos + i + 1);
          batch.tokens += predicted;
        }
        batch.global_tokens += predicted;
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

int64_t Loader::restore(const nlohmann::json& s, bool redeal) {
  if (s.at("documents").get<size_t>() != docs_.size()) throw Error("loader: the checkpoint was made on other data");
  if (s.at("rows").size() != rows_.size() && !redeal)
    throw Error("loader: the checkpoint read " + std::to_string(s.at("rows").size()) + " rows per batch, this run " +
                std::to_string(rows_.size()) + ": give the same --batch (times ranks) to resume");
  if (s.value("packing", std::string("documents")) != (o_.packing == Packing::kStream ? "stream" : "documents"))
    throw Error("loader: the checkpoint packed documents as " + s.value("packing", std::string("documents")) +
                "; give the same --packing to resume");
  if (s.value("window", window_) != window_)
    throw Error("loader: the checkpoint read windows of " + std::to_string(s.value("window", window_)) +
                " tokens, this model's window_size is " + std::to_string(window_));
  epoch_ = s.at("epoch").get<int64_t>();
  shuffle();
  cursor_ = s.at("cursor").get<int64_t>();
  const int64_t kept = std::min<int64_t>(static_cast<int64_t>(s.at("rows").size()), static_cast<int64_t>(rows_.size()));
  for (int64_t i = 0; i < static_cast<int64_t>(rows_.size()); ++i) {
    rows_[i] = Row{};  // beyond the checkpoint's rows: a new document at the next window
    if (i >= kept) continue;
    rows_[i].doc = s["rows"][i][0].get<int64_t>();
    rows_[i].pos = s["rows"][i][1].get<int64_t>();
  }
  return kept;
}

}  // namespace bakallm
