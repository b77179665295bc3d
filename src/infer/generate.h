// Text generation: the one loop that the CLI, the trainer's samples and the
// server use. Prompts of equal length decode together as rows of one batch
// (the incremental Decoder); each row samples with its own seeded Sampler,
// stops at EOS, a stop string or max_new, and streams its text through a
// per-token callback.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "infer/sampler.h"
#include "model/baka_lm.h"

namespace bakallm {

class Tokenizer;

struct GenerateOptions {
  int64_t max_new = 128;
  SamplingOptions sampling;        // row b of a batch samples with seed + b
  std::vector<std::string> stops;  // stop before any of these strings (needs a tokenizer)
  bool stop_at_eos = true;         // the tokenizer's EOS ends a row
};

enum class FinishReason { kLength, kStop, kCancelled };
const char* finish_reason_name(FinishReason reason);  // "length", "stop", "cancelled"

struct Generation {
  std::vector<int64_t> ids;  // generated tokens (EOS included when it ended the row)
  std::string text;          // their text, cut before a stop string (empty without a tokenizer)
  FinishReason finish = FinishReason::kLength;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;  // of the batch the row was in
};

// Called after each generated token of row ROW with the text that became
// final (possibly empty: text that could still be the start of a stop string
// is held back until it cannot). Returning false stops that row (cancelled).
using TokenCallback = std::function<bool(int64_t row, int64_t id, const std::string& text)>;

// The text of one generated sequence as it grows: decoding, stop strings, and
// the hold-back that keeps a stop string's beginning from being streamed.
class TextStream {
 public:
  TextStream(const Tokenizer* tokenizer, std::vector<std::string> stops);
  std::string add(int64_t id);  // the text that became final with this token
  std::string flush();          // at the end: the rest of the text
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }

 private:
  std::string decode_from(size_t first) const;      // ids_[first, end)
  std::optional<std::string> pending_text() const;  // what ids_[read_, end) add to text_
  void append_final(const std::string& added);      // to text_, then the stop strings

  const Tokenizer* tok_;
  std::vector<std::string> stops_;
  std::vector<uint32_t> ids_;
  std::string text_;   // decoded so far, cut before a stop string
  size_t emitted_ = 0; // bytes of text_ handed out
  // Each token decodes ids_[context_, end) alone (not the whole stream): the
  // text of ids_[context_, read_) is context_text_, and what the rest adds to
  // it, once it ends on a whole character, joins text_.
  size_t context_ = 0, read_ = 0;
  std::string context_text_;
  bool stopped_ = false;
};

// Generates after each of PROMPTS (token ids, BOS included by the caller),
// which must all have the same length: one batch. TOKENIZER may be null (no
// text, no stop strings, no EOS). ON_TOKEN's row is FIRST_ROW + b.
std::vector<Generation> generate(BakaLM& model, const Tokenizer* tokenizer,
                                 const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& options,
                                 const TokenCallback& on_token = {}, int64_t first_row = 0);

// Any prompts, in order: each run of up to BATCH consecutive prompts of equal
// length is one batch. Returns one Generation per prompt.
std::vector<Generation> generate_each(BakaLM& model, const Tokenizer* tokenizer,
                                      const std::vector<std::vector<int64_t>>& prompts, const GenerateOptions& options,
                                      int64_t batch, const TokenCallback& on_token = {});

}  // namespace bakallm
