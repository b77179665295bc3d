#pragma once
// Two threads for a decoded token's kernels: the caller and one worker of
// our own, which spins briefly between calls and then sleeps. After its share
// of a weight product the worker streams its share of the product that
// followed this one last time into its caches, while the caller does the
// layer's serial work (norms, gates, the EMA step), when no weights would
// otherwise be read. Used for inference only (c10::InferenceMode) with two
// threads: everywhere else, and when another thread's call is in flight,
// the kernels split their loops with at::parallel_for. libgomp's worker,
// which spins after each OpenMP region, then idles through the token:
// two spinning threads on two cores had made a token 70 ms instead of 4.

#include <c10/util/C++17.h>  // FunctionRef.h uses its invoke_result_t without including it (libtorch 1.13)
#include <c10/util/FunctionRef.h>

#include <cstddef>
#include <cstdint>

namespace bakallm {

// What a call's worker reads: KEY names the weight (its data), [FIRST,
// FIRST + BYTES) the worker's share of it. Empty: stream nothing after it.
struct StreamShare {
  const void* key = nullptr;
  const char* first = nullptr;
  int64_t bytes = 0;
};

// Runs F(0) here and F(1) on the pool's worker and returns when both are
// done; false, running nothing, when the pool can't take it (not inference,
// not two threads, inside a parallel region, another call in flight).
// Callables by reference (c10::function_ref): a decoded token's ~50 calls
// allocate nothing.
bool decode_pair(c10::function_ref<void(int)> f, const StreamShare& share = {});

// The most weights whose successors the pool remembers: beyond, it forgets
// them all and learns the order again from the next token. A base model's
// token is ~60 products; a server that loads model after model would
// otherwise keep an entry for every weight it ever decoded with.
constexpr size_t kDecodeSuccessors = 4096;

// How many weights' successors the pool remembers now.
size_t decode_pool_successors();

// Asks for the cache lines of [FIRST, FIRST + BYTES) by prefetches (which
// never fault, even on freed memory) at about one core's read rate, while
// KEEP_GOING() (asked every 512 bytes) holds. Paced: on the AMD EPYC (Zen,
// AVX2) prefetches issued back to back are mostly dropped, a megabyte's in
// 12 us and then read no faster than never asked for (80 us); paced to 5 ns
// a line, read 2.4x faster after (BM_StreamAhead).
void stream_ahead(const char* first, int64_t bytes, c10::function_ref<bool()> keep_going);

// The most rows (a product's input, attention's queries) a call hands the
// pool: decoding's. Evaluation's and prefill's many rows stay on libgomp,
// beside libtorch's own regions.
constexpr int64_t kDecodeRows = 16;

// A weight whose rows the indices of parallel_rows' work read, ROW_BYTES
// each from DATA: the worker's half of them is its StreamShare. On the pool
// the work is cut in whole UNITs of indices from BEGIN (the last may end
// short, at END): a row product's tiles of columns stay whole, so each
// column's sum is the same whichever thread and chunk it falls in.
struct StreamedRows {
  const void* data = nullptr;
  int64_t row_bytes = 0;
  int64_t unit = 1;
};

// [BEGIN, END) of work on ROWS rows split in two halves by decode_pair, else
// by at::parallel_for with GRAIN; halves for at most kDecodeRows rows
// wherever at::parallel_for would split (more than a grain of work): a
// region left to libgomp would set its worker spinning beside ours (int8's
// small products had, 3.7 -> 16 ms a token). Each thread takes its half in
// shrinking chunks (at least 16 kB of the weight) and, done with it, takes
// chunks of the other's from the top: the two finish together though one
// runs slower, or found its half in its caches (the worker, which streamed
// it ahead). With fixed halves one had waited for the other 3-7% of a tiny
// bfloat16 token on the AMD EPYC.
void parallel_rows(int64_t rows, int64_t begin, int64_t end, int64_t grain, c10::function_ref<void(int64_t, int64_t)> f,
                   const StreamedRows& weight = {});

}  // namespace bakallm
