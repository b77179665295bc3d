#include "spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct bakallm_spm {
  sentencepiece::SentencePieceProcessor sp;
};

namespace {
void set_error(char* err, size_t errlen, const std::string& msg) {
  if (err && errlen) {
    std::strncpy(err, msg.c_str(), errlen - 1);
    err[errlen - 1] = '\0';
  }
}
}  // namespace

extern "C" {

bakallm_spm* bakallm_spm_load(const char* path, char* err, size_t errlen) {
  auto* spm = new bakallm_spm;
  const auto status = spm->sp.Load(path);
  if (!status.ok()) {
    set_error(err, errlen, status.ToString());
    delete spm;
    return nullptr;
  }
  return spm;
}

void bakallm_spm_free(bakallm_spm* spm) { delete spm; }

long bakallm_spm_encode(const bakallm_spm* spm, const char* text, size_t len, int** ids, char* err, size_t errlen) {
  std::vector<int> v;
  const auto status = spm->sp.Encode(std::string_view(text, len), &v);
  if (!status.ok()) {
    set_error(err, errlen, status.ToString());
    return -1;
  }
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (v.size() ? v.size() : 1)));
  std::memcpy(*ids, v.data(), sizeof(int) * v.size());
  return static_cast<long>(v.size());
}

long bakallm_spm_decode(const bakallm_spm* spm, const int* ids, size_t n, char** text, char* err, size_t errlen) {
  std::string s;
  const auto status = spm->sp.Decode(std::vector<int>(ids, ids + n), &s);
  if (!status.ok()) {
    set_error(err, errlen, status.ToString());
    return -1;
  }
  *text = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(*text, s.c_str(), s.size() + 1);
  return static_cast<long>(s.size());
}

void bakallm_spm_free_buffer(void* p) { std::free(p); }

int bakallm_spm_piece_size(const bakallm_spm* spm) { return spm->sp.GetPieceSize(); }
int bakallm_spm_bos_id(const bakallm_spm* spm) { return spm->sp.bos_id(); }
int bakallm_spm_eos_id(const bakallm_spm* spm) { return spm->sp.eos_id(); }

int bakallm_spm_piece_kind(const bakallm_spm* spm, int id) {
  if (spm->sp.IsControl(id)) return 1;
  if (spm->sp.IsUnknown(id)) return 2;
  if (spm->sp.IsByte(id)) return 3;
  return 0;
}

long bakallm_spm_id_to_piece(const bakallm_spm* spm, int id, char* out, size_t outlen) {
  const std::string& piece = spm->sp.IdToPiece(id);
  set_error(out, outlen, piece);
  return static_cast<long>(piece.size());
}
}
