// SentencePiece, through libsentencepiece: load any .model, encode, decode,
// and train a llama-style BPE model (byte fallback, split digits).
// libsentencepiece is reached through a small shim module loaded privately
// (see data/spm/spm_shim.h for why).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bakallm {

// Whether a document starts with BOS: kAuto follows the tokenizer (a
// SentencePiece model with a BOS piece adds it, llama-style).
enum class BosPolicy { kAuto, kAdd, kNone };
BosPolicy parse_bos(const std::string& name);  // "auto", "add", "none"

class BpeTokenizer;

// A SentencePiece .model, or a byte-level BPE tokenizer.json (data/bpe.h).
class Tokenizer {
 public:
  explicit Tokenizer(const std::string& model_path);  // throws Error naming the file
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;
  Tokenizer(Tokenizer&& other) noexcept;

  std::vector<uint32_t> encode(std::string_view text) const;  // no BOS
  // A document as the model reads it: BOS (as BOS says), then the pieces of TEXT.
  std::vector<uint32_t> encode_document(std::string_view text, BosPolicy bos = BosPolicy::kAuto) const;
  bool has_bos() const;
  std::string decode(const std::vector<uint32_t>& ids) const;
  // The text of one piece as it reads inside a stream (for incremental output):
  // "▁" becomes a space, byte pieces their byte, control pieces nothing.
  std::string piece_text(uint32_t id) const;
  uint32_t bos_id() const;
  uint32_t eos_id() const;
  int64_t vocab_size() const;
  const std::string& path() const { return path_; }

 private:
  void* handle_ = nullptr;            // bakallm_spm*, for a SentencePiece .model
  std::shared_ptr<BpeTokenizer> bpe_;  // for a Hugging Face tokenizer.json
  std::string path_;
};

// Throws "SOURCE: tokenizer has N pieces but the model's vocab_size is V"
// when a tokenizer could produce ids the model has no embedding for.
void require_vocab_fits(int64_t tokenizer_vocab, int64_t model_vocab, const std::string& source);

// The name a tokenizer file takes in a model or data directory:
// "tokenizer.json" for a .json, else "tokenizer.model".
std::string tokenizer_file_name(const std::string& path);
// DIR/tokenizer.model, else DIR/tokenizer.json, else "" (a model or data directory's tokenizer).
std::string find_tokenizer(const std::string& dir);

// "5,17,33" -> ids, each checked against VOCAB; errors name WHAT (e.g. "--prompt-ids").
std::vector<int64_t> parse_token_ids(const std::string& text, int64_t vocab, const std::string& what);

struct TokenizerTrainOptions {
  std::vector<std::string> inputs;  // plain-text files, one sentence per line
  int vocab_size = 32000;
  std::string out;                  // writes OUT (the .model) and OUT's .vocab beside it
  int threads = 2;
  int64_t max_sentences = 2000000;  // input_sentence_size
};
// BPE, byte fallback, split digits, unk/bos/eos = 0/1/2 (llama-style).
void train_tokenizer(const TokenizerTrainOptions& options);

}  // namespace bakallm
