#include <gtest/gtest.h>

#include <fstream>

#include "data/shard.h"
#include "files.h"
#include "paths.h"
#include "util/error.h"

namespace bakallm {
namespace {

std::string error_reading(const std::string& path) {
  try {
    ShardReader r(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Shard, RoundTripUint16AndUint32) {
  test::TempDir dir;
  std::vector<uint32_t> small = {1, 5, 9, 65535, 1, 7};
  write_shard(dir / "a.bin", small);
  ShardReader a(dir / "a.bin");
  EXPECT_EQ(a.version(), 1);
  EXPECT_EQ(a.size(), 6);
  for (size_t i = 0; i < small.size(); ++i) EXPECT_EQ(a.token(i), small[i]);

  std::vector<uint32_t> big = {1, 70000, 3, 4000000000u};
  write_shard(dir / "b.bin", big);
  ShardReader b(dir / "b.bin");
  EXPECT_EQ(b.version(), 2);
  for (size_t i = 0; i < big.size(); ++i) EXPECT_EQ(b.token(i), big[i]);
  auto t = a.tokens(1, 3);
  EXPECT_EQ(t.scalar_type(), torch::kLong);
  EXPECT_EQ(t[2].item<int64_t>(), 65535);
}

TEST(Shard, HeaderLayoutIsLlmC) {
  test::TempDir dir;
  write_shard(dir / "a.bin", {1, 2, 3});
  std::ifstream in(dir / "a.bin", std::ios::binary);
  int32_t header[256];
  in.read(reinterpret_cast<char*>(header), sizeof header);
  EXPECT_EQ(header[0], 20240520);
  EXPECT_EQ(header[1], 1);
  EXPECT_EQ(header[2], 3);
  uint16_t tokens[3];
  in.read(reinterpret_cast<char*>(tokens), sizeof tokens);
  EXPECT_EQ(tokens[2], 3);
}

TEST(Shard, DocumentsSplitAtBos) {
  test::TempDir dir;
  write_shard(dir / "a.bin", {1, 10, 11, 1, 12, 1, 13, 14, 15});
  auto docs = ShardReader(dir / "a.bin").documents(1);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].begin, 0);
  EXPECT_EQ(docs[0].length, 3);
  EXPECT_EQ(docs[1].begin, 3);
  EXPECT_EQ(docs[1].length, 2);
  EXPECT_EQ(docs[2].length, 4);

  write_shard(dir / "nobos.bin", {10, 11, 12});
  auto one = ShardReader(dir / "nobos.bin").documents(1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].length, 3);

  write_shard(dir / "lead.bin", {10, 11, 1, 12});  // text before the first BOS is a document
  EXPECT_EQ(ShardReader(dir / "lead.bin").documents(1).size(), 2u);
}

TEST(Shard, RejectsBadFiles) {
  test::TempDir dir;
  write_shard(dir / "good.bin", {1, 2, 3, 4});
  const std::string bytes = test::read_file(dir / "good.bin");
  auto write = [&](const std::string& name, const std::string& b) {
    test::write_file(dir / name, b);
    return dir / name;
  };
  auto magic = bytes;
  magic[0] = 'X';
  EXPECT_NE(error_reading(write("magic.bin", magic)).find("magic.bin: not a token shard"), std::string::npos);
  auto version = bytes;
  version[4] = 7;
  EXPECT_NE(error_reading(write("version.bin", version)).find("unsupported shard version 7"), std::string::npos);
  EXPECT_NE(error_reading(write("short.bin", bytes.substr(0, bytes.size() - 1))).find("header says 4 tokens"),
            std::string::npos);
  EXPECT_NE(error_reading(write("tiny.bin", bytes.substr(0, 100))).find("too short"), std::string::npos);
  EXPECT_NE(error_reading(dir / "missing.bin").find("missing.bin: cannot open"), std::string::npos);
  EXPECT_THROW(write_shard(dir / "v1.bin", {70000}, 1), Error);
}

}  // namespace
}  // namespace bakallm
