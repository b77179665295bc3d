// C interface to libsentencepiece, built as its own shared module and loaded
// with dlopen(RTLD_LOCAL | RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece carries its own copy of protobuf-lite and
// exports its symbols, while libtorch loads the full libprotobuf.so.32. Linked
// into one process, libprotobuf's static initialisers bind to
// sentencepiece's copy and crash before main(). Loaded privately with deep
// binding, sentencepiece keeps to its own protobuf and libtorch to its own.
#pragma once
#include <stddef.h>

extern "C" {

typedef struct bakallm_spm bakallm_spm;

// Every call that can fail writes a message into err[errlen] and returns
// nullptr / a negative value.
bakallm_spm* bakallm_spm_load(const char* path, char* err, size_t errlen);
void bakallm_spm_free(bakallm_spm* spm);

// Encodes text[len]; fills *ids (malloc'd, free with bakallm_spm_free_buffer).
long bakallm_spm_encode(const bakallm_spm* spm, const char* text, size_t len, int** ids, char* err, size_t errlen);
// Decodes ids[n]; *text is malloc'd and NUL-terminated.
long bakallm_spm_decode(const bakallm_spm* spm, const int* ids, size_t n, char** text, char* err, size_t errlen);
void bakallm_spm_free_buffer(void* p);

int bakallm_spm_piece_size(const bakallm_spm* spm);
int bakallm_spm_bos_id(const bakallm_spm* spm);
int bakallm_spm_eos_id(const bakallm_spm* spm);
// 1 control, 2 unknown, 3 byte, 0 normal.
int bakallm_spm_piece_kind(const bakallm_spm* spm, int id);
// The piece string of id (NUL-terminated into out[outlen]); returns its length.
long bakallm_spm_id_to_piece(const bakallm_spm* spm, int id, char* out, size_t outlen);
}
