// Training batches the way the author trained: each of B rows reads its
// document window after window, so the model's state (memory, caches,
// position) can be carried from step to step; a row that finishes its
// document starts the next one at the following window, with a reset flag.
// Padding happens only after the last tokens of a document; with
// Packing::kStream, never (documents follow each other inside a window).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <torch/torch.h>

#include "data/shard.h"
#include "model/config.h"

namespace bakallm {

// How a row moves from one document to the next.
enum class Packing {
  kDocuments,  // a new document starts a new window with a fresh state (the author's; padding after each end)
  kStream,     // documents back to back, BOS between, the state carried across (nanoGPT, llm.c): no padding
};
Packing parse_packing(const std::string& name);  // "documents", "stream"

struct LoaderOptions {
  std::vector<std::string> shards;
  int64_t rows = 8;              // B, every rank's rows together (data parallel: the global batch)
  int64_t first_row = 0;         // this rank's rows: [first_row, first_row + local_rows) of the B
  int64_t local_rows = 0;        // 0: all B
  int64_t windows_per_step = 2;  // k: each batch is k·W tokens per row
  uint32_t bos_id = 1;
  uint64_t seed = 0;             // document order, reshuffled each epoch
  Packing packing = Packing::kDocuments;
};

// This rank's rows of the batch (all B in one process). Every rank deals the
// documents of all B rows, so global row i reads what row i of one process
// with the whole batch reads.
struct Batch {
  torch::Tensor ids;      // [b, k·W] int64
  torch::Tensor targets;  // [b, k·W] int64, kIgnoreIndex where nothing is predicted
  torch::Tensor resets;   // [b, k] bool: row r starts a new document at window c
  int64_t tokens = 0;     // predicted tokens in these rows
  int64_t global_tokens = 0;  // predicted tokens in all B rows
  double padding = 0;     // share of all B·k·W input slots that are padding
};

class Loader {
 public:
  // Windows of the model's W = CONFIG.window_size tokens.
  Loader(LoaderOptions options, const Config& config);

  Batch next();
  int64_t epoch() const { return epoch_; }
  int64_t documents() const { return static_cast<int64_t>(docs_.size()); }
  int64_t total_tokens() const { return total_tokens_; }

  // Position in the data, for checkpoints: restore(state()) continues exactly.
  nlohmann::json state() const;
  // With REDEAL, a state of another number of rows is taken too: rows
  // [0, min) continue, rows beyond start new documents. Returns the rows
  // whose stream continues (B when the counts match).
  int64_t restore(const nlohmann::json& state, bool redeal = false);

 private:
  struct Doc {
    size_t shard;
    int64_t begin, length;
  };
  struct Row {
    int64_t doc = -1;  // index into docs_, -1 before the first
    int64_t pos = 0;   // next token of that document
  };
  int64_t take_document();
  void shuffle();

  LoaderOptions o_;
  int64_t window_;  // W
  std::vector<ShardReader> shards_;
  std::vector<Doc> docs_;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0, epoch_ = 0, total_tokens_ = 0;
  std::vector<Row> rows_;
};

}  // namespace bakallm
