// Writes a stream of documents into numbered shards of bounded size:
// DIR/PREFIX_000000.bin, ... A shard is written under a temporary name and
// renamed when complete; documents are never split across shards.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace bakallm {

class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string prefix, int64_t max_tokens);

  void add(const std::vector<uint32_t>& document);  // BOS included by the caller
  void finish();                                    // writes the last, partial shard

  const std::vector<std::string>& shards() const { return shards_; }
  int64_t tokens() const { return total_; }

 private:
  void flush();
  std::string dir_, prefix_;
  int64_t max_tokens_;
  int64_t total_ = 0;
  std::vector<uint32_t> buffer_;
  std::vector<std::string> shards_;
};

}  // namespace bakallm
