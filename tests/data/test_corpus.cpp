// Corpus formats (txt separators, jsonl, zip, zst, gz), UTF-8 policies, and the tokenize job.
#include <gtest/gtest.h>
#include <zip.h>
#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/corpus.h"
#include "data/shard.h"
#include "data/tokenize_job.h"
#include "data/tokenizer.h"
#include "files.h"
#include "paths.h"
#include "util/error.h"

namespace bakallm {
namespace {

std::vector<std::string> docs_of(const std::string& path, CorpusOptions o = {}) {
  std::vector<std::string> docs;
  read_corpus(path, o, [&](std::string&& d) { docs.push_back(d); });
  return docs;
}

std::string zstd(const std::string& s) {
  std::string out(ZSTD_compressBound(s.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), s.data(), s.size(), 3));
  return out;
}

void write_gz(const std::string& path, const std::string& s) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, s.data(), static_cast<unsigned>(s.size()));
  gzclose(f);
}

const std::string kStories = "One day a cat.\nIt sat.\n<|endoftext|>\nA dog ran.\n\nThe end.\n<|endoftext|>\n";

TEST(Corpus, TextSeparators) {
  test::TempDir dir;
  test::write_file(dir / "s.txt", kStories);
  auto eot = docs_of(dir / "s.txt");
  ASSERT_EQ(eot.size(), 2u);
  EXPECT_EQ(eot[0], "One day a cat.\nIt sat.\n");
  EXPECT_EQ(eot[1], "A dog ran.\n\nThe end.\n");
  CorpusOptions blank;
  blank.separator = DocSeparator::kBlankLine;
  test::write_file(dir / "b.txt", "para one\nline two\n\n\npara two\n");
  EXPECT_EQ(docs_of(dir / "b.txt", blank), (std::vector<std::string>{"para one\nline two\n", "para two\n"}));
  CorpusOptions percent;
  percent.separator = DocSeparator::kPercent;
  test::write_file(dir / "fortunes", "A fortune.\n%\nAnother\none.\n%\n");  // no extension: plain text
  EXPECT_EQ(docs_of(dir / "fortunes", percent), (std::vector<std::string>{"A fortune.\n", "Another\none.\n"}));
  CorpusOptions file;
  file.separator = DocSeparator::kFile;
  EXPECT_EQ(docs_of(dir / "s.txt", file).size(), 1u);
  test::write_file(dir / "crlf.txt", "a\r\n<|endoftext|>\r\nb\r\n");
  EXPECT_EQ(docs_of(dir / "crlf.txt").size(), 2u);
}

TEST(Corpus, JsonlAndCompression) {
  test::TempDir dir;
  const std::string jsonl = "{\"text\": \"first\\narticle\"}\n\n{\"text\": \"second\", \"id\": 2}\n";
  test::write_file(dir / "a.jsonl", jsonl);
  EXPECT_EQ(docs_of(dir / "a.jsonl"), (std::vector<std::string>{"first\narticle", "second"}));
  test::write_file(dir / "a.jsonl.zst", zstd(jsonl));
  EXPECT_EQ(docs_of(dir / "a.jsonl.zst").size(), 2u);
  test::write_file(dir / "s.txt.zstd", zstd(kStories));
  EXPECT_EQ(docs_of(dir / "s.txt.zstd").size(), 2u);
  write_gz(dir / "s.txt.gz", kStories);
  EXPECT_EQ(docs_of(dir / "s.txt.gz"), docs_of(dir / "s.txt.zstd"));
  test::write_file(dir / "bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
  try {
    docs_of(dir / "bad.jsonl");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl: line 2 has no string field \"text\""), std::string::npos);
  }
  test::write_file(dir / "trunc.txt.zst", zstd(kStories).substr(0, 10));
  EXPECT_THROW(docs_of(dir / "trunc.txt.zst"), Error);
  test::write_file(dir / "x.parquet", "PAR1");
  EXPECT_THROW(docs_of(dir / "x.parquet"), Error);
}

TEST(Corpus, ZipMembers) {
  test::TempDir dir;
  int err = 0;
  zip_t* z = zip_open((dir / "c.zip").c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  ASSERT_TRUE(z);
  auto add = [&](const char* name, const std::string& data) {
    auto* copy = new std::string(data);  // libzip reads it at zip_close
    zip_source_t* src = zip_source_buffer(z, copy->data(), copy->size(), 0);
    zip_file_add(z, name, src, ZIP_FL_OVERWRITE);
    return copy;
  };
  auto* a = add("books/a.txt", "Book A.\n");
  auto* b = add("books/b.txt", kStories);
  auto* c = add("books/README", "not a corpus member");
  auto* d = add("books/c.jsonl.zst", zstd("{\"text\": \"zipped jsonl\"}\n"));
  ASSERT_EQ(zip_close(z), 0);
  delete a, delete b, delete c, delete d;
  auto docs = docs_of(dir / "c.zip");
  EXPECT_EQ(docs, (std::vector<std::string>{"Book A.\n", "One day a cat.\nIt sat.\n", "A dog ran.\n\nThe end.\n",
                                            "zipped jsonl"}));
  test::write_file(dir / "broken.zip", "PK\x03\x04garbage");
  EXPECT_THROW(docs_of(dir / "broken.zip"), Error);
}

TEST(Corpus, InvalidUtf8Policies) {
  test::TempDir dir;
  test::write_file(dir / "latin.txt", "caf\xe9\nna\xefve\n");
  try {
    docs_of(dir / "latin.txt");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("latin.txt: invalid UTF-8 at byte 3 (line 1"), std::string::npos) << e.what();
  }
  CorpusOptions o;
  o.invalid_utf8 = InvalidUtf8::kLatin1;
  EXPECT_EQ(docs_of(dir / "latin.txt", o)[0], "caf\xc3\xa9\nna\xc3\xafve\n");
  o.invalid_utf8 = InvalidUtf8::kReplace;
  EXPECT_EQ(docs_of(dir / "latin.txt", o)[0], "caf\xef\xbf\xbd\nna\xef\xbf\xbdve\n");
  EXPECT_EQ(invalid_utf8_offset("ok \xe2\x96\x81 \xf0\x9f\x99\x82"), -1);
  EXPECT_EQ(invalid_utf8_offset("\xc0\xaf"), 0);          // overlong
  EXPECT_EQ(invalid_utf8_offset("ab\xed\xa0\x80"), 2);    // surrogate
  EXPECT_EQ(invalid_utf8_offset("abc\xe2\x96"), 3);       // truncated
}

class TokenizeJob : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer = test::data("tokenizer/openllama_v1_tokenizer.RECONSTRUCTED.model");
    if (!std::filesystem::exists(tokenizer)) GTEST_SKIP() << "needs ../shared/data/tokenizer";
  }
  std::string tokenizer;
};

TEST_F(TokenizeJob, WritesShardsWithBosAndAValidationSplit) {
  test::TempDir dir;
  std::string text;
  for (int i = 0; i < 40; ++i) text += "Story number " + std::to_string(i) + " is short.\n<|endoftext|>\n";
  test::write_file(dir / "s.txt", text);
  test::write_file(dir / "w.jsonl.zst", zstd("{\"text\": \"An article.\"}\n{\"text\": \"Another one.\"}\n"));
  TokenizeOptions o;
  o.inputs = {dir / "s.txt", dir / "w.jsonl.zst"};
  o.tokenizer = tokenizer;
  o.out_dir = dir / "out";
  o.val_fraction = 0.1;
  o.shard_tokens = 100;
  o.progress = false;
  auto t = tokenize_corpus(o);
  EXPECT_EQ(t.documents, 42);
  EXPECT_EQ(t.val_documents, 4);
  EXPECT_GT(t.train_shards.size(), 1u);  // bounded shards
  Tokenizer tok(tokenizer);
  int64_t docs = 0, tokens = 0;
  for (const auto& path : t.train_shards) {
    ShardReader r(path);
    EXPECT_LE(r.size(), 100);
    EXPECT_EQ(r.token(0), tok.bos_id());  // every shard starts a document
    docs += static_cast<int64_t>(r.documents(tok.bos_id()).size());
    tokens += r.size();
  }
  EXPECT_EQ(docs, 38);
  EXPECT_EQ(tokens, t.train_tokens);
  ShardReader first(t.train_shards[0]);
  auto span = first.documents(1)[0];
  std::vector<uint32_t> ids;
  for (int64_t i = 1; i < span.length; ++i) ids.push_back(first.token(span.begin + i));
  EXPECT_EQ(tok.decode(ids), "Story number 0 is short.\n");
  nlohmann::json manifest;
  std::ifstream(dir / "out/manifest.json") >> manifest;
  EXPECT_EQ(manifest["documents"], 42);
  EXPECT_EQ(manifest["val_shards"].size(), t.val_shards.size());
  EXPECT_TRUE(std::filesystem::exists(dir / "out/tokenizer.model"));
}

TEST_F(TokenizeJob, FailuresLeaveNoCompleteLookingOutput) {
  test::TempDir dir;
  test::write_file(dir / "good.txt", "fine text\n");
  test::write_file(dir / "bad.txt", "caf\xe9\n");
  test::write_file(dir / "empty.txt", "  \n\n");
  TokenizeOptions o;
  o.tokenizer = tokenizer;
  o.out_dir = dir / "out";
  o.progress = false;
  o.inputs = {dir / "good.txt"};
  tokenize_corpus(o);
  ASSERT_TRUE(std::filesystem::exists(dir / "out/manifest.json"));
  const auto before = test::read_file(dir / "out/manifest.json");
  o.inputs = {dir / "good.txt", dir / "bad.txt"};  // a rerun that fails halfway
  EXPECT_THROW(tokenize_corpus(o), Error);
  EXPECT_EQ(test::read_file(dir / "out/manifest.json"), before);  // the earlier dataset is untouched
  EXPECT_NO_THROW(ShardReader(dir / "out/train_000000.bin"));
  o.inputs = {dir / "empty.txt"};
  try {
    tokenize_corpus(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no documents"), std::string::npos);
  }
  o.inputs = {dir / "missing.txt"};
  EXPECT_THROW(tokenize_corpus(o), Error);
  for (const auto& d : {dir / "out", dir.path.string()})
    for (const auto& e : std::filesystem::directory_iterator(d))
      EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  EXPECT_EQ(test::read_file(dir / "out/manifest.json"), before);
  // A directory that holds anything else is refused, and left as it was.
  test::write_file(dir / "mine/thesis.txt", "precious");
  o.inputs = {dir / "good.txt"};
  o.out_dir = dir / "mine";
  try {
    tokenize_corpus(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("thesis.txt"), std::string::npos) << e.what();
  }
  EXPECT_EQ(test::read_file(dir / "mine/thesis.txt"), "precious");
  EXPECT_FALSE(std::filesystem::exists(dir / "mine/manifest.json"));
}

TEST(TokenizeSplit, ValidationDocumentsAreSpreadEvenly) {
  int n = 0;
  for (int i = 0; i < 100; ++i) n += is_validation_document(i, 0.05);
  EXPECT_EQ(n, 5);
  EXPECT_FALSE(is_validation_document(0, 0.0));
}

}  // namespace
}  // namespace bakallm
