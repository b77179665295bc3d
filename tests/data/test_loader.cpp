// The Loader: rows stream documents window by window, padding only after a
// document's last tokens, exact restore.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "data/loader.h"
#include "data/shard.h"
#include "model/targets.h"
#include "paths.h"
#include "util/error.h"

namespace bakallm {
namespace {

Config window_config(int64_t W) {
  Config c;
  c.window_size = W;
  return c;
}

// Documents 1,10..(10+n-1) etc: BOS then increasing ids, so positions are checkable.
std::vector<uint32_t> doc(uint32_t first, int64_t n) {
  std::vector<uint32_t> d = {1};
  for (int64_t i = 0; i + 1 < n; ++i) d.push_back(first + static_cast<uint32_t>(i));
  return d;
}

// DOCS written one after another into DIR/s.bin, read by ROWS rows.
LoaderOptions one_shard(const test::TempDir& dir, const std::vector<std::vector<uint32_t>>& docs, int64_t rows) {
  std::vector<uint32_t> tokens;
  for (const auto& d : docs) tokens.insert(tokens.end(), d.begin(), d.end());
  write_shard(dir / "s.bin", tokens);
  LoaderOptions o;
  o.shards = {dir / "s.bin"};
  o.rows = rows;
  return o;
}

TEST(Loader, RowsWalkDocumentsAndResetAtNewOnes) {
  test::TempDir dir;
  auto o = one_shard(dir, {doc(100, 10), doc(200, 3), doc(300, 7)}, 1);
  const auto model = window_config(4);
  o.windows_per_step = 2;
  Loader loader(o, model);
  std::vector<int64_t> starts;  // the first id of each window that resets
  int64_t predicted = 0;
  for (int step = 0; step < 6; ++step) {
    auto b = loader.next();
    predicted += b.tokens;
    for (int c = 0; c < 2; ++c) {
      auto ids = b.ids[0].narrow(0, 4 * c, 4);
      auto targets = b.targets[0].narrow(0, 4 * c, 4);
      if (b.resets[0][c].item<bool>()) {
        EXPECT_EQ(ids[0].item<int64_t>(), 1);  // a document starts at its BOS
        starts.push_back(ids[1].item<int64_t>());
      }
      for (int i = 0; i < 4; ++i) {  // every target is the next token of the same document
        const auto t = targets[i].item<int64_t>();
        if (t == kIgnoreIndex) continue;
        const auto x = ids[i].item<int64_t>();
        EXPECT_TRUE(t == x + 1 || (x == 1 && t % 100 == 0)) << x << " -> " << t;
      }
    }
  }
  ASSERT_GE(starts.size(), 4u);  // 3 documents, then the next epoch
  std::set<int64_t> first_epoch(starts.begin(), starts.begin() + 3);
  EXPECT_EQ(first_epoch, (std::set<int64_t>{100, 200, 300}));
  EXPECT_GT(predicted, 0);
}

// --packing stream: documents back to back inside a window, BOS between,
// no reset after a row's first document, no padding; every document read
// whole and in order; the padding share is reported for both modes.
TEST(Loader, StreamPackingFillsEveryWindow) {
  test::TempDir dir;
  auto o = one_shard(dir, {doc(100, 3), doc(200, 5), doc(300, 2), doc(400, 6)}, 1);
  o.windows_per_step = 2;
  o.packing = Packing::kStream;
  const auto model = window_config(4);
  Loader loader(o, model);
  std::vector<int64_t> seen;  // the row's input ids, in order
  for (int step = 0; step < 2; ++step) {
    auto b = loader.next();
    EXPECT_EQ(b.padding, 0.0);
    EXPECT_EQ(b.resets[0][0].item<bool>(), step == 0);  // only the row's first document starts fresh
    EXPECT_FALSE(b.resets[0][1].item<bool>());
    for (int64_t i = 0; i < 8; ++i) {
      const auto x = b.ids[0][i].item<int64_t>(), t = b.targets[0][i].item<int64_t>();
      seen.push_back(x);
      if (t != kIgnoreIndex) EXPECT_TRUE(t == x + 1 || (x == 1 && t % 100 == 0)) << x << " -> " << t;
      else EXPECT_NE(x, 1) << "only a document's last token predicts nothing";
    }
  }
  // 16 ids: 4 documents of 3+5+2+6 = 16 tokens, each whole, in the epoch's order.
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 4);
  std::set<int64_t> firsts;
  for (size_t i = 0; i + 1 < seen.size(); ++i)
    if (seen[i] == 1) firsts.insert(seen[i + 1]);
  EXPECT_EQ(firsts, (std::set<int64_t>{100, 200, 300, 400}));
  o.packing = Packing::kDocuments;  // the same data padded: 4 windows of 4 hold 3, 4+1, 2, 4+2 tokens
  Loader padded(o, model);
  auto b = padded.next();
  EXPECT_GT(b.padding, 0.0);
  EXPECT_THROW(padded.restore(loader.state()), Error);  // a checkpoint resumes with its own packing
}

TEST(Loader, PaddingOnlyAfterADocumentsLastTokens) {
  test::TempDir dir;
  auto o = one_shard(dir, {doc(100, 6)}, 1);  // 6 tokens: windows of 4 -> 4 + 2 (padded)
  const auto model = window_config(4);
  o.windows_per_step = 2;
  Loader loader(o, model);
  auto b = loader.next();
  EXPECT_EQ(b.tokens, 5);  // 6 tokens predict 5
  EXPECT_FALSE(b.resets[0][1].item<bool>());
  auto t = b.targets[0];
  EXPECT_EQ(t[4].item<int64_t>(), 104);
  EXPECT_EQ(t[5].item<int64_t>(), kIgnoreIndex);  // the document's last token
  EXPECT_EQ(t[6].item<int64_t>(), kIgnoreIndex);  // padding
  auto next = loader.next();
  EXPECT_TRUE(next.resets[0][0].item<bool>());  // the next document (next epoch) at once
}

TEST(Loader, RestoreContinuesExactly) {
  test::TempDir dir;
  std::vector<std::vector<uint32_t>> docs;
  for (uint32_t d = 0; d < 7; ++d) docs.push_back(doc(100 * (d + 1), 5 + d));
  auto o = one_shard(dir, docs, 2);
  const auto model = window_config(3);
  o.seed = 5;
  Loader a(o, model), b(o, model);
  for (int i = 0; i < 5; ++i) a.next();
  auto saved = a.state();
  std::vector<torch::Tensor> expect;
  for (int i = 0; i < 6; ++i) expect.push_back(a.next().ids);
  for (int i = 0; i < 2; ++i) b.next();
  b.restore(saved);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(torch::equal(b.next().ids, expect[i])) << i;
  Loader other_window(o, window_config(4));  // the window comes from the model's config, and must match
  EXPECT_THROW(other_window.restore(saved), Error);
}

}  // namespace
}  // namespace bakallm
