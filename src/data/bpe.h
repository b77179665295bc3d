// Byte-level BPE from a Hugging Face tokenizer.json (GPT-2, GPT-NeoX / Pythia):
//   added tokens    split out first (e.g. <|endoftext|>)
//   normalizer      none, or NFC (GPT-NeoX; ICU)
//   pre-tokenizer   ByteLevel: GPT-2's pattern (PCRE2, Unicode classes), each
//                   piece's bytes mapped to printable characters
//   model           BPE: the lowest-ranked adjacent pair merged until none is left
//   post-processor  TemplateProcessing with a special token before $A: that is
//                   the BOS the tokenizer adds; ByteLevel or none: no BOS
//   decoder         ByteLevel: characters back to bytes
// Written by hand: Debian packages no tokenizer library that reads
// tokenizer.json. Checked against @huggingface/tokenizers and gpt-3-encoder
// (npm) on wikitext-103 and a Gutenberg book (tests/data/test_bpe.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace bakallm {

class BpeTokenizer {
 public:
  explicit BpeTokenizer(const std::string& path);  // throws Error naming the file
  ~BpeTokenizer();
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  std::vector<uint32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<uint32_t>& ids) const;  // special tokens left out
  int64_t vocab_size() const;
  int64_t bos_id() const;  // the post-processor's leading special token, or -1
  int64_t eos_id() const;  // <|endoftext|> or </s>, or -1

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bakallm
