#include "data/shard_writer.h"

#include <cstdio>

#include "data/shard.h"

namespace bakallm {

ShardWriter::ShardWriter(std::string dir, std::string prefix, int64_t max_tokens)
    : dir_(std::move(dir)), prefix_(std::move(prefix)), max_tokens_(max_tokens) {}

void ShardWriter::add(const std::vector<uint32_t>& document) {
  if (!buffer_.empty() && static_cast<int64_t>(buffer_.size() + document.size()) > max_tokens_) flush();
  buffer_.insert(buffer_.end(), document.begin(), document.end());
  total_ += static_cast<int64_t>(document.size());
}

void ShardWriter::flush() {
  if (buffer_.empty()) return;
  char name[64];
  std::snprintf(name, sizeof name, "%s_%06zu.bin", prefix_.c_str(), shards_.size());
  const std::string path = dir_ + "/" + name;
  write_shard(path, buffer_);
  shards_.push_back(path);
  buffer_.clear();
}

void ShardWriter::finish() { flush(); }

}  // namespace bakallm
