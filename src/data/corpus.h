// Corpus readers: every document of a text file, in order.
//   .txt    documents separated by a line "<|endoftext|>" (default), by blank
//           lines, or one document per file
//   .jsonl  one JSON object per line, the document in its "text" field
//   .zip    each member by its own extension (.txt, .jsonl, compressed ones)
//   .zst / .zstd / .gz of any of the above
// Text must be valid UTF-8; errors name the file (and member or line).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace bakallm {

enum class DocSeparator {
  kEndOfText,  // a line that is exactly "<|endoftext|>"
  kBlankLine,  // one or more empty lines
  kPercent,    // a line that is exactly "%" (fortune files)
  kFile,       // the whole file (or zip member) is one document
};
DocSeparator parse_separator(const std::string& name);  // "eot", "blank", "percent", "file"

// What to do with a file (or zip member) that is not valid UTF-8.
enum class InvalidUtf8 {
  kError,    // stop with an error naming the file, byte and line (default)
  kReplace,  // replace each offending byte with U+FFFD
  kLatin1,   // read the whole file as Latin-1 (old Gutenberg texts)
};
InvalidUtf8 parse_invalid_utf8(const std::string& name);  // "error", "replace", "latin1"

struct CorpusOptions {
  DocSeparator separator = DocSeparator::kEndOfText;
  InvalidUtf8 invalid_utf8 = InvalidUtf8::kError;
  std::string jsonl_field = "text";
};

// Calls on_document(text) for every non-empty document of PATH.
void read_corpus(const std::string& path, const CorpusOptions& options,
                 const std::function<void(std::string&& text)>& on_document);

// The whole file, decompressed when its name ends in .zst/.zstd/.gz.
std::string read_decompressed(const std::string& path);

// Offset of the first byte that breaks UTF-8, or -1 when TEXT is valid.
int64_t invalid_utf8_offset(const std::string& text);
std::string replace_invalid_utf8(const std::string& text);  // bad bytes -> U+FFFD
std::string latin1_to_utf8(const std::string& text);

}  // namespace bakallm
