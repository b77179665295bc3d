#include "data/shard.h"

#include <algorithm>
#include <cstring>

#include "util/atomic_file.h"
#include "util/error.h"

namespace bakallm {

namespace {

int32_t read_i32_le(const uint8_t* p) {
  uint32_t v = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
  return static_cast<int32_t>(v);
}

void put_u32_le(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}

}  // namespace

ShardReader::ShardReader(const std::string& path) : file_(path) {
  if (file_.size() < kShardHeaderBytes)
    throw file_error(path, "too short for a token shard header (" + std::to_string(file_.size()) + " bytes)");
  const uint8_t* h = file_.data();
  if (read_i32_le(h) != kShardMagic)
    throw file_error(path, "not a token shard (magic " + std::to_string(read_i32_le(h)) + ", expected " +
                               std::to_string(kShardMagic) + ")");
  version_ = read_i32_le(h + 4);
  if (version_ != 1 && version_ != 2)
    throw file_error(path, "unsupported shard version " + std::to_string(version_) + " (1: uint16, 2: uint32)");
  const int32_t count = read_i32_le(h + 8);
  if (count < 0) throw file_error(path, "negative token count in header");
  count_ = count;
  const size_t width = version_ == 1 ? 2 : 4;
  const size_t expect = kShardHeaderBytes + static_cast<size_t>(count_) * width;
  if (file_.size() != expect)
    throw file_error(path, "header says " + std::to_string(count_) + " tokens (" + std::to_string(expect) +
                               " bytes) but the file has " + std::to_string(file_.size()) + " bytes");
}

uint32_t ShardReader::token(int64_t i) const {
  const uint8_t* p = file_.data() + kShardHeaderBytes;
  if (version_ == 1) return uint32_t(p[2 * i]) | uint32_t(p[2 * i + 1]) << 8;
  return static_cast<uint32_t>(read_i32_le(p + 4 * i));
}

torch::Tensor ShardReader::tokens(int64_t begin, int64_t len) const {
  TORCH_CHECK(begin >= 0 && len >= 0 && begin + len <= count_, "shard range out of bounds");
  auto out = torch::empty({len}, torch::kLong);
  auto* o = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < len; ++i) o[i] = token(begin + i);
  return out;
}

std::vector<ShardReader::Span> ShardReader::documents(uint32_t bos_id) const {
  std::vector<Span> docs;
  int64_t start = 0;
  for (int64_t i = 1; i < count_; ++i) {
    if (token(i) == bos_id) {
      docs.push_back({start, i - start});
      start = i;
    }
  }
  if (count_ > 0) docs.push_back({start, count_ - start});
  return docs;
}

void write_shard(const std::string& path, const std::vector<uint32_t>& tokens, int version) {
  if (tokens.size() > static_cast<size_t>(INT32_MAX))
    throw file_error(path, "too many tokens for one shard (" + std::to_string(tokens.size()) + ")");
  const uint32_t max_id = tokens.empty() ? 0 : *std::max_element(tokens.begin(), tokens.end());
  if (version == 0) version = max_id < 65536 ? 1 : 2;
  if (version == 1 && max_id >= 65536)
    throw file_error(path, "token id " + std::to_string(max_id) + " does not fit a version-1 (uint16) shard");
  if (version != 1 && version != 2) throw file_error(path, "shard version must be 1 or 2");
  std::string header;
  put_u32_le(header, static_cast<uint32_t>(kShardMagic));
  put_u32_le(header, static_cast<uint32_t>(version));
  put_u32_le(header, static_cast<uint32_t>(tokens.size()));
  header.resize(kShardHeaderBytes, '\0');
  std::string body;
  body.reserve(tokens.size() * (version == 1 ? 2 : 4));
  for (uint32_t t : tokens) {
    body.push_back(static_cast<char>(t));
    body.push_back(static_cast<char>(t >> 8));
    if (version == 2) {
      body.push_back(static_cast<char>(t >> 16));
      body.push_back(static_cast<char>(t >> 24));
    }
  }
  write_file_atomically(path, [&](std::ostream& out) {
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(body.data(), static_cast<std::streamsize>(body.size()));
  });
}

void ShardReader::require_ids_below(int64_t vocab) const {
  auto check = [&](const auto* ids) {
    for (int64_t i = 0; i < count_; ++i)
      if (static_cast<int64_t>(ids[i]) >= vocab)
        throw file_error(path(), "token " + std::to_string(i) + " is " + std::to_string(ids[i]) +
                                     ", outside the model's vocabulary of " + std::to_string(vocab));
  };
  const auto* data = file_.data() + kShardHeaderBytes;
  if (version_ == 1) check(reinterpret_cast<const uint16_t*>(data));
  else check(reinterpret_cast<const uint32_t*>(data));
}

}  // namespace bakallm
