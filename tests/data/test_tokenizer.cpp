#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/tokenizer.h"
#include "paths.h"
#include "util/error.h"

namespace bakallm {
namespace {

std::string openllama() { return test::data("tokenizer/openllama_v1_tokenizer.RECONSTRUCTED.model"); }

TEST(Tokenizer, OpenLlamaKnownIdsAndRoundTrip) {
  if (!std::filesystem::exists(openllama())) GTEST_SKIP() << "needs ../shared/data/tokenizer";
  Tokenizer tok(openllama());
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.bos_id(), 1u);
  EXPECT_EQ(tok.eos_id(), 2u);
  // The OpenLLaMA authors' ground truth (see ../shared/data/SOURCES.md).
  EXPECT_EQ(tok.encode("thermal"), (std::vector<uint32_t>{14412}));
  EXPECT_EQ(tok.encode("tasks"), (std::vector<uint32_t>{8931}));
  const std::string text = "Once upon a time, there was a little robot.\nIt said: \"héllo 123\" 🙂";
  auto ids = tok.encode(text);
  EXPECT_EQ(tok.decode(ids), text);
  std::string pieces;
  for (auto id : ids) pieces += tok.piece_text(id);
  // Piece by piece, the text reads the same but for the dummy-prefix space.
  EXPECT_EQ(pieces, " " + text);
  EXPECT_THROW(tok.decode({40000}), Error);
}

TEST(Tokenizer, TrainsASmallBpeModel) {
  test::TempDir dir;
  {
    std::ofstream f(dir / "corpus.txt");
    for (int i = 0; i < 300; ++i)
      f << "the cat sat on the mat number " << i << ". a dog ran after the cat, and the cat ran away.\n";
  }
  TokenizerTrainOptions o;
  o.inputs = {dir / "corpus.txt"};
  o.vocab_size = 320;
  o.out = dir / "small.model";
  train_tokenizer(o);
  Tokenizer tok(dir / "small.model");
  EXPECT_EQ(tok.vocab_size(), 320);
  EXPECT_EQ(tok.bos_id(), 1u);
  const std::string text = "the dog sat on the cat 42. Zebra ü!";  // unseen letters go through bytes
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  EXPECT_LT(tok.encode("the cat sat on the mat").size(), 12u);  // merges learned
  EXPECT_FALSE(std::filesystem::exists(dir / "small.tmp.model"));
}

TEST(Tokenizer, BadFiles) {
  test::TempDir dir;
  EXPECT_THROW(Tokenizer(dir / "absent.model"), Error);
  std::ofstream(dir / "junk.model") << "not a protobuf at all";
  try {
    Tokenizer t(dir / "junk.model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("junk.model: not a SentencePiece model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bakallm
