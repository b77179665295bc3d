// Token shards in llm.c's format, the one format every tool here reads:
//   int32 header[256]: [0] magic 20240520, [1] version (1: uint16 tokens,
//   2: uint32 tokens), [2] token count; then the tokens, little-endian.
// A document starts at each BOS token; a shard without BOS is one document.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "util/mapped_file.h"

namespace bakallm {

constexpr int32_t kShardMagic = 20240520;
constexpr size_t kShardHeaderBytes = 256 * sizeof(int32_t);

class ShardReader {
 public:
  // Maps PATH and validates magic, version and size; throws Error naming PATH.
  explicit ShardReader(const std::string& path);

  int version() const { return version_; }
  int64_t size() const { return count_; }  // tokens
  uint32_t token(int64_t i) const;
  // Tokens [begin, begin+len) as int64 (a copy).                 -> [len]
  torch::Tensor tokens(int64_t begin, int64_t len) const;

  struct Span {
    int64_t begin, length;
  };
  // Documents, split before each BOS token.
  std::vector<Span> documents(uint32_t bos_id) const;
  const std::string& path() const { return file_.path(); }
  // Throws "PATH: token N is ID, outside the vocabulary of VOCAB" for the first id >= VOCAB.
  void require_ids_below(int64_t vocab) const;

 private:
  MappedFile file_;
  int version_ = 0;
  int64_t count_ = 0;
};

// Writes TOKENS atomically; VERSION 0 picks 1 (uint16) when every id fits.
void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int version = 0);

}  // namespace bakallm
