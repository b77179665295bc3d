// Generation (the one loop the CLI, the trainer and the server use).
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "infer/generate.h"
#include "paths.h"
#include "small_config.h"
#include "util/error.h"

namespace bakallm {
namespace {

BakaLM small_model(uint64_t seed) {
  auto model = make_model(test::small_config(32, 2, 3, 48, 5, 50), seed);
  model->eval();
  return model;
}

GenerateOptions greedy(int64_t max_new) {
  GenerateOptions o;
  o.max_new = max_new;
  o.sampling.temperature = 0;
  return o;
}

// Greedy generation picks, at each step, the argmax of a full forward over the context.
TEST(Generate, GreedyEqualsArgmaxOfTheForward) {
  auto model = small_model(24);
  std::vector<int64_t> prompt = {1, 7, 9};
  auto out = generate(model, nullptr, {prompt}, greedy(9));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].ids.size(), 9u);
  EXPECT_EQ(out[0].finish, FinishReason::kLength);
  EXPECT_EQ(out[0].prompt_tokens, 3);
  std::vector<int64_t> context = prompt;
  torch::NoGradGuard no_grad;
  for (auto id : out[0].ids) {
    auto logits = model(torch::tensor(context, torch::kLong).unsqueeze(0)).logits[0][-1];
    EXPECT_EQ(id, logits.argmax().item<int64_t>());
    context.push_back(id);
  }
}

// Rows of one batch generate what each would alone; the callback sees every
// token of every row, and returning false stops that row only.
TEST(Generate, BatchRowsEqualSingleRunsAndCallbacksCancel) {
  auto model = small_model(26);
  const std::vector<std::vector<int64_t>> prompts = {{1, 4, 8, 15}, {1, 16, 23, 42}, {1, 2, 3, 4}};
  auto together = generate_each(model, nullptr, prompts, greedy(12), /*batch=*/3);
  ASSERT_EQ(together.size(), 3u);
  for (size_t b = 0; b < prompts.size(); ++b) {
    auto alone = generate(model, nullptr, {prompts[b]}, greedy(12));
    EXPECT_EQ(together[b].ids, alone[0].ids) << "row " << b;
  }
  std::vector<int64_t> seen(3, 0);
  auto cancelled = generate(model, nullptr, prompts, greedy(12), [&](int64_t row, int64_t, const std::string&) {
    return ++seen[row] < 4 || row != 1;  // row 1 stops after its 4th token
  });
  EXPECT_EQ(cancelled[1].ids.size(), 4u);
  EXPECT_EQ(cancelled[1].finish, FinishReason::kCancelled);
  EXPECT_EQ(cancelled[0].ids, together[0].ids);
  EXPECT_EQ(cancelled[2].ids, together[2].ids);
  EXPECT_EQ(seen[0], 12);
  EXPECT_THROW(generate(model, nullptr, {{1, 2}, {1}}, greedy(2)), Error);  // one batch, one length
}

// TextStream: stop strings cut the text, and a tail that may still become a
// stop string is held back, so streamed pieces never show part of one.
TEST(Generate, StopStringsAreNeverStreamed) {
  Tokenizer tok(test::data("tokenizer/openllama_v1_tokenizer.RECONSTRUCTED.model"));
  const auto ids = tok.encode("Hello world. The END is here, friends.");
  TextStream s(&tok, {"END"});
  std::string streamed;
  for (auto id : ids) {
    streamed += s.add(id);
    EXPECT_EQ(std::string("Hello world. The ").compare(0, streamed.size(), streamed), 0)
        << "streamed beyond the text before the stop string: " << streamed;
    if (s.stopped()) break;
  }
  streamed += s.flush();
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.text(), "Hello world. The ");
  EXPECT_EQ(streamed, s.text());
  TextStream plain(&tok, {});
  std::string all;
  for (auto id : ids) all += plain.add(id);
  all += plain.flush();
  EXPECT_EQ(all, "Hello world. The END is here, friends.");
}

// Each token decodes only the pieces since the last whole character (after
// their context), yet the streamed text is the decoding of the whole stream:
// leading spaces, characters of several bytes (byte pieces included), a
// stop string spread over many pieces far into the stream.
TEST(Generate, StreamedTextIsTheWholeDecoding) {
  Tokenizer tok(test::data("tokenizer/openllama_v1_tokenizer.RECONSTRUCTED.model"));
  std::string text;
  for (int i = 0; i < 40; ++i) text += " Naïve café, 日本語 and 🙂 emoji — line " + std::to_string(i) + ".\n";
  const auto ids = tok.encode(text);
  TextStream plain(&tok, {});
  std::string streamed;
  for (auto id : ids) {
    const auto piece = plain.add(id);
    streamed += piece;
    EXPECT_EQ(plain.text().compare(0, streamed.size(), streamed), 0);
  }
  streamed += plain.flush();
  EXPECT_EQ(streamed, tok.decode(ids));
  EXPECT_EQ(plain.text(), tok.decode(ids));
  TextStream late(&tok, {"🙂 emoji — line 33"});
  std::string cut;
  for (auto id : ids) {
    cut += late.add(id);
    if (late.stopped()) break;
  }
  cut += late.flush();
  const auto full = tok.decode(ids);
  EXPECT_EQ(cut, full.substr(0, full.find("🙂 emoji — line 33")));
  // A stream that ends inside a character: flush hands out what the decoder makes of it.
  const auto bytes = tok.encode("🙂");
  TextStream open(&tok, {});
  std::string partial;
  for (size_t i = 0; i + 1 < bytes.size(); ++i) partial += open.add(bytes[i]);
  partial += open.flush();
  EXPECT_EQ(partial, tok.decode(std::vector<uint32_t>(bytes.begin(), bytes.end() - 1)));
}

// A byte-level BPE tokenizer decodes a character cut short to its raw bytes
// (SentencePiece writes U+FFFD): the stream waits for the rest of it too.
// The vocabulary: "a" and the two bytes of "é" (C3 A9: "Ã" and "©" in GPT-2's
// byte characters), no merges.
TEST(Generate, StreamedTextWaitsForAByteLevelCharacter) {
  test::TempDir dir;
  const std::string path = dir / "bytes.json";
  nlohmann::json j = {{"normalizer", nullptr},
                      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
                      {"decoder", {{"type", "ByteLevel"}}},
                      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"\u00c3", 1}, {"\u00a9", 2}}}, {"merges", nlohmann::json::array()}}}};
  std::ofstream(path) << j.dump();
  Tokenizer tok(path);
  const auto ids = tok.encode("aéa");
  ASSERT_EQ(ids, (std::vector<uint32_t>{0, 1, 2, 0}));
  TextStream s(&tok, {});
  EXPECT_EQ(s.add(ids[0]), "a");
  EXPECT_EQ(s.add(ids[1]), "");  // "\xC3" alone is half a character
  EXPECT_EQ(s.add(ids[2]), "é");
  EXPECT_EQ(s.add(ids[3]), "a");
  EXPECT_EQ(s.flush(), "");
  EXPECT_EQ(s.text(), "aéa");
}

}  // namespace
}  // namespace bakallm
