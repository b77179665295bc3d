#include "data/corpus.h"

#include <zip.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/strings.h"

namespace bakallm {

namespace {

std::string strip_compression(const std::string& name) {
  for (const char* ext : {".zstd", ".zst", ".gz"})
    if (ends_with(name, ext)) return name.substr(0, name.size() - std::string(ext).size());
  return name;
}

std::string read_plain(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw file_error(path, "cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string zstd_decompress(const std::string& data, const std::string& source) {
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  std::string out;
  std::string buf(ZSTD_DStreamOutSize(), '\0');
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  size_t last = 1;
  while (in.pos < in.size) {
    ZSTD_outBuffer o{buf.data(), buf.size(), 0};
    last = ZSTD_decompressStream(ctx.get(), &o, &in);
    if (ZSTD_isError(last)) throw file_error(source, std::string("bad zstd data: ") + ZSTD_getErrorName(last));
    out.append(buf.data(), o.pos);
  }
  if (last != 0) throw file_error(source, "truncated zstd data");
  return out;
}

std::string gzip_decompress(const std::string& data, const std::string& source) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK) throw file_error(source, "zlib init failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  std::string out;
  char buf[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      throw file_error(source, rc == Z_BUF_ERROR ? "truncated gzip data" : "bad gzip data");
    }
    out.append(buf, sizeof buf - zs.avail_out);
  }
  inflateEnd(&zs);
  return out;
}

std::string decompress(std::string data, const std::string& name, const std::string& source) {
  if (ends_with(name, ".zst") || ends_with(name, ".zstd")) return zstd_decompress(data, source);
  if (ends_with(name, ".gz")) return gzip_decompress(data, source);
  return data;
}

// TEXT as valid UTF-8, per the policy.
std::string checked_utf8(std::string text, InvalidUtf8 policy, const std::string& source) {
  const int64_t bad = invalid_utf8_offset(text);
  if (bad < 0) return text;
  if (policy == InvalidUtf8::kReplace) return replace_invalid_utf8(text);
  if (policy == InvalidUtf8::kLatin1) return latin1_to_utf8(text);
  const auto line = 1 + std::count(text.begin(), text.begin() + bad, '\n');
  throw file_error(source, "invalid UTF-8 at byte " + std::to_string(bad) + " (line " + std::to_string(line) +
                               "; --invalid-utf8 replace or latin1 reads it anyway)");
}

void emit(std::string&& doc, const std::function<void(std::string&&)>& on_document) {
  if (doc.find_first_not_of(" \t\r\n") != std::string::npos) on_document(std::move(doc));
}

void split_text(const std::string& text, DocSeparator sep, const std::function<void(std::string&&)>& on_document) {
  if (sep == DocSeparator::kFile) {
    emit(std::string(text), on_document);
    return;
  }
  std::string doc;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const bool boundary = sep == DocSeparator::kEndOfText ? line == "<|endoftext|>"
                          : sep == DocSeparator::kPercent ? line == "%"
                                                          : line.empty();
    if (boundary) {
      emit(std::move(doc), on_document);
      doc.clear();
    } else {
      doc.append(text, pos, std::min(end + 1, text.size()) - pos);
    }
    pos = end + 1;
  }
  emit(std::move(doc), on_document);
}

void split_jsonl(const std::string& text, const std::string& field, const std::string& source,
                 const std::function<void(std::string&&)>& on_document) {
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      throw file_error(source, "line " + std::to_string(line_no) + " is not valid JSON");
    }
    if (!j.is_object() || !j.contains(field) || !j[field].is_string())
      throw file_error(source, "line " + std::to_string(line_no) + " has no string field \"" + field + "\"");
    emit(j[field].get<std::string>(), on_document);
  }
}

// TEXT is the decompressed content of NAME (a file or zip member).
void read_text(const std::string& raw, const std::string& name, const std::string& source,
               const CorpusOptions& o, const std::function<void(std::string&&)>& on_document) {
  const std::string text = checked_utf8(raw, o.invalid_utf8, source);
  if (ends_with(strip_compression(name), ".jsonl")) split_jsonl(text, o.jsonl_field, source, on_document);
  else split_text(text, o.separator, on_document);
}

void read_zip(const std::string& path, const CorpusOptions& o, const std::function<void(std::string&&)>& on_document) {
  int err = 0;
  std::unique_ptr<zip_t, decltype(&zip_discard)> archive(zip_open(path.c_str(), ZIP_RDONLY, &err), zip_discard);
  if (!archive) throw file_error(path, "not a readable zip archive");
  const zip_int64_t n = zip_get_num_entries(archive.get(), 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    const std::string name = zip_get_name(archive.get(), i, 0);
    const std::string member = path + ":" + name;
    const std::string base = strip_compression(name);
    if (!ends_with(base, ".txt") && !ends_with(base, ".jsonl")) continue;  // READMEs, folders, ...
    zip_stat_t st;
    if (zip_stat_index(archive.get(), i, 0, &st) != 0) throw file_error(member, "cannot stat zip member");
    std::unique_ptr<zip_file_t, decltype(&zip_fclose)> f(zip_fopen_index(archive.get(), i, 0), zip_fclose);
    if (!f) throw file_error(member, "cannot open zip member");
    std::string data(st.size, '\0');
    if (zip_fread(f.get(), data.data(), st.size) != static_cast<zip_int64_t>(st.size))
      throw file_error(member, "truncated zip member");
    read_text(decompress(std::move(data), name, member), name, member, o, on_document);
  }
}

}  // namespace

DocSeparator parse_separator(const std::string& name) {
  if (name == "eot") return DocSeparator::kEndOfText;
  if (name == "blank") return DocSeparator::kBlankLine;
  if (name == "file") return DocSeparator::kFile;
  if (name == "percent") return DocSeparator::kPercent;
  throw Error("unknown document separator '" + name + "' (eot, blank, percent, file)");
}

std::string read_decompressed(const std::string& path) { return decompress(read_plain(path), path, path); }

void read_corpus(const std::string& path, const CorpusOptions& o,
                 const std::function<void(std::string&&)>& on_document) {
  const std::string base = strip_compression(path);
  if (ends_with(path, ".zip")) {
    read_zip(path, o, on_document);
  } else if (ends_with(base, ".txt") || ends_with(base, ".jsonl") || ends_with(base, ".raw") ||
             std::filesystem::path(base).filename().string().find('.') == std::string::npos ||
             ends_with(base, ".md")) {
    read_text(read_decompressed(path), path, path, o, on_document);
  } else {
    throw file_error(path, "unknown corpus format (expected .txt, .jsonl, .zip, optionally .zst/.gz)");
  }
}

InvalidUtf8 parse_invalid_utf8(const std::string& name) {
  if (name == "error") return InvalidUtf8::kError;
  if (name == "replace") return InvalidUtf8::kReplace;
  if (name == "latin1") return InvalidUtf8::kLatin1;
  throw Error("unknown --invalid-utf8 policy '" + name + "' (error, replace, latin1)");
}

std::string replace_invalid_utf8(const std::string& text) {
  std::string out;
  size_t pos = 0;
  while (pos < text.size()) {
    const int64_t bad = invalid_utf8_offset(text.substr(pos));
    if (bad < 0) {
      out.append(text, pos, std::string::npos);
      break;
    }
    out.append(text, pos, static_cast<size_t>(bad));
    out += "\xef\xbf\xbd";  // U+FFFD
    pos += static_cast<size_t>(bad) + 1;
  }
  return out;
}

std::string latin1_to_utf8(const std::string& text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (unsigned char c : text) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

int64_t invalid_utf8_offset(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return static_cast<int64_t>(i);
    if (i + len > n) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return static_cast<int64_t>(i);
    i += len;
  }
  return -1;
}

}  // namespace bakallm
