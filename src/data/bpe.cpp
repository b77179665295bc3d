#include "data/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <fstream>
#include <mutex>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace bakallm {

namespace {

// GPT-2's pre-tokenizer pattern, as the ByteLevel pre-tokenizer uses it.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void append_utf8(std::string& out, uint32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others
// for 256, 257, ... in order. As UTF-8 strings, and the way back.
struct ByteMap {
  std::string to_char[256];
  std::unordered_map<std::string, uint8_t> to_byte;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      append_utf8(to_char[b], printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++));
      to_byte[to_char[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

size_t utf8_length(unsigned char lead) { return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4; }

}  // namespace

struct BpeTokenizer::Impl {
  std::string path;
  std::unordered_map<std::string, uint32_t> vocab;
  std::vector<std::string> pieces;  // id -> piece
  struct Merge {
    int rank;
    uint32_t left, right, merged;
  };
  static uint64_t pair_key(uint32_t a, uint32_t b) { return (uint64_t(a) << 32) | b; }
  std::unordered_map<uint64_t, Merge> merges;  // (left, right) -> rank and the merged piece
  struct Added {
    std::string content;
    uint32_t id;
    bool special;
  };
  std::vector<Added> added;  // longest first
  std::vector<bool> special;
  int64_t bos = -1, eos = -1;
  pcre2_code* pattern = nullptr;
  bool nfc = false;  // Unicode NFC before pre-tokenizing (ICU)
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<uint32_t>> cache;

  // WORD (byte-level characters) as ids: one per byte, then the lowest-ranked
  // adjacent pair merged everywhere, again and again, until none is left.
  std::vector<uint32_t> bpe(const std::string& word) const {
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto it = cache.find(word);
      if (it != cache.end()) return it->second;
    }
    std::vector<uint32_t> ids;
    for (size_t i = 0; i < word.size();) {
      const size_t n = utf8_length(static_cast<unsigned char>(word[i]));
      auto it = vocab.find(word.substr(i, n));
      if (it == vocab.end()) throw file_error(path, "no vocabulary entry for the byte '" + word.substr(i, n) + "'");
      ids.push_back(it->second);
      i += n;
    }
    while (ids.size() > 1) {
      const Merge* best = nullptr;
      for (size_t i = 0; i + 1 < ids.size(); ++i) {
        auto it = merges.find(pair_key(ids[i], ids[i + 1]));
        if (it != merges.end() && (!best || it->second.rank < best->rank)) best = &it->second;
      }
      if (!best) break;
      const Merge m = *best;
      size_t out = 0;  // every occurrence of the pair, left to right, in place
      for (size_t i = 0; i < ids.size();) {
        if (i + 1 < ids.size() && ids[i] == m.left && ids[i + 1] == m.right) {
          ids[out++] = m.merged;
          i += 2;
        } else {
          ids[out++] = ids[i++];
        }
      }
      ids.resize(out);
    }
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (cache.size() > 200000) cache.clear();
    cache.emplace(word, ids);
    return ids;
  }

  void encode_plain(std::string_view raw, std::vector<uint32_t>& out) const {
    const auto& bytes = byte_map();
    std::string normalized;
    std::string_view text = raw;
    if (nfc && std::any_of(raw.begin(), raw.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
      UErrorCode status = U_ZERO_ERROR;
      const auto* n = icu::Normalizer2::getNFCInstance(status);
      if (U_FAILURE(status)) throw Error("ICU: no NFC normalizer");
      n->normalize(icu::UnicodeString::fromUTF8(icu::StringPiece(raw.data(), static_cast<int32_t>(raw.size()))), status)
          .toUTF8String(normalized);
      if (U_FAILURE(status)) throw file_error(path, "NFC normalization failed");
      text = normalized;
    }
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(pattern, nullptr);
    size_t start = 0;
    while (start < text.size()) {
      const int rc = pcre2_match(pattern, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      if (ov[1] == ov[0]) {  // cannot happen with this pattern; never loop
        ++start;
        continue;
      }
      std::string word;
      for (size_t i = ov[0]; i < ov[1]; ++i) word += bytes.to_char[static_cast<unsigned char>(text[i])];
      for (auto id : bpe(word)) out.push_back(id);
      start = ov[1];
    }
    pcre2_match_data_free(md);
  }
};

BpeTokenizer::BpeTokenizer(const std::string& path) : impl_(std::make_unique<Impl>()) {
  auto& m = *impl_;
  m.path = path;
  std::ifstream in(path);
  if (!in) throw file_error(path, "tokenizer not found");
  nlohmann::json j;
  try {
    in >> j;
    const auto& model = j.at("model");
    if (model.value("type", std::string("BPE")) != "BPE") throw file_error(path, "not a BPE tokenizer.json");
    const auto& pre = j.at("pre_tokenizer");
    if (pre.is_null() || pre.value("type", std::string()) != "ByteLevel")
      throw file_error(path, "only byte-level BPE (a ByteLevel pre_tokenizer, as GPT-2 and GPT-NeoX) is supported");
    const auto normalizer = j.value("normalizer", nlohmann::json());
    if (normalizer.is_object() && normalizer.value("type", std::string()) == "NFC")
      m.nfc = true;  // GPT-NeoX / Pythia
    else if (!normalizer.is_null())
      throw file_error(path, "the normalizer " + normalizer.value("type", std::string("?")) +
                                 " is not supported (none or NFC are)");
    for (const auto& [piece, id] : model.at("vocab").items()) m.vocab[piece] = id.get<uint32_t>();
    int rank = 0;
    for (const auto& merge : model.at("merges")) {
      std::string a, b;
      if (merge.is_string()) {
        const auto s = merge.get<std::string>();
        const auto space = s.find(' ');
        if (space == std::string::npos) throw file_error(path, "bad merge '" + s + "'");
        a = s.substr(0, space);
        b = s.substr(space + 1);
      } else {
        a = merge.at(0).get<std::string>();
        b = merge.at(1).get<std::string>();
      }
      const auto ia = m.vocab.find(a), ib = m.vocab.find(b), iab = m.vocab.find(a + b);
      if (ia == m.vocab.end() || ib == m.vocab.end() || iab == m.vocab.end())
        throw file_error(path, "merge '" + a + " " + b + "' names a piece the vocabulary lacks");
      m.merges.emplace(Impl::pair_key(ia->second, ib->second), Impl::Merge{rank, ia->second, ib->second, iab->second});
      ++rank;
    }
    for (const auto& t : j.value("added_tokens", nlohmann::json::array())) {
      const uint32_t id = t.at("id").get<uint32_t>();
      m.added.push_back({t.at("content").get<std::string>(), id, t.value("special", false)});
      m.vocab.emplace(t.at("content").get<std::string>(), id);
    }
    const auto& post = j.value("post_processor", nlohmann::json());
    if (post.is_object() && post.value("type", std::string()) == "TemplateProcessing") {
      const auto& single = post.at("single");
      if (!single.empty() && single[0].contains("SpecialToken")) {
        const auto name = single[0]["SpecialToken"].at("id").get<std::string>();
        m.bos = post.at("special_tokens").at(name).at("ids").at(0).get<int64_t>();
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw file_error(path, std::string("not a tokenizer.json: ") + e.what());
  }
  std::sort(m.added.begin(), m.added.end(),
            [](const Impl::Added& a, const Impl::Added& b) { return a.content.size() > b.content.size(); });
  uint32_t max_id = 0;
  for (const auto& [piece, id] : m.vocab) max_id = std::max(max_id, id);
  m.pieces.assign(max_id + 1, "");
  m.special.assign(max_id + 1, false);
  for (const auto& [piece, id] : m.vocab) m.pieces[id] = piece;
  for (const auto& a : m.added) {
    m.special[a.id] = a.special;
    if (m.eos < 0 && (a.content == "<|endoftext|>" || a.content == "</s>")) m.eos = a.id;
  }
  int error = 0;
  PCRE2_SIZE offset = 0;
  m.pattern = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                            &error, &offset, nullptr);
  if (!m.pattern) throw Error("BPE: cannot compile the pre-tokenizer pattern");
  pcre2_jit_compile(m.pattern, PCRE2_JIT_COMPLETE);
}

BpeTokenizer::~BpeTokenizer() {
  if (impl_ && impl_->pattern) pcre2_code_free(impl_->pattern);
}

std::vector<uint32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<uint32_t> out;
  size_t done = 0;
  for (size_t i = 0; i < text.size();) {  // added tokens first, longest match
    const Impl::Added* hit = nullptr;
    for (const auto& a : impl_->added)
      if (!a.content.empty() && text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    impl_->encode_plain(text.substr(done, i - done), out);
    out.push_back(hit->id);
    i += hit->content.size();
    done = i;
  }
  impl_->encode_plain(text.substr(done), out);
  return out;
}

std::string BpeTokenizer::decode(const std::vector<uint32_t>& ids) const {
  const auto& bytes = byte_map();
  std::string out;
  for (auto id : ids) {
    if (id >= impl_->pieces.size() || impl_->special[id]) continue;
    const auto& piece = impl_->pieces[id];
    for (size_t i = 0; i < piece.size();) {
      const size_t n = utf8_length(static_cast<unsigned char>(piece[i]));
      auto it = bytes.to_byte.find(piece.substr(i, n));
      if (it != bytes.to_byte.end()) out += static_cast<char>(it->second);
      else out += piece.substr(i, n);  // an added token's own text
      i += n;
    }
  }
  return out;
}

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->pieces.size()); }
int64_t BpeTokenizer::bos_id() const { return impl_->bos; }
int64_t BpeTokenizer::eos_id() const { return impl_->eos; }

}  // namespace bakallm
