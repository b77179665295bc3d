// Text files -> llm.c token shards: read every document (data/corpus.h),
// encode with SentencePiece on every thread, prepend BOS, split into train and
// validation, and write bounded shards. DIR/manifest.json is written last, so
// a directory without it is incomplete.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/corpus.h"

namespace bakallm {

struct TokenizeOptions {
  std::vector<std::string> inputs;
  std::string tokenizer;          // SentencePiece .model
  std::string out_dir;
  double val_fraction = 0.0;      // share of documents held out, spread evenly
  int64_t shard_tokens = 100000000;
  CorpusOptions corpus;
  int threads = 2;
  bool progress = true;
};

struct TokenizeTotals {
  int64_t files = 0, bytes = 0, documents = 0, val_documents = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  std::vector<std::string> train_shards, val_shards;
  double seconds = 0;
};

TokenizeTotals tokenize_corpus(const TokenizeOptions& options);

// Whether document I (0-based) goes to validation for FRACTION.
bool is_validation_document(int64_t i, double fraction);

}  // namespace bakallm
