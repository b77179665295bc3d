// What a stream hands from one window to the next (State: the memory for the
// next window's prefix, one cache per layer, tokens seen), and what a window
// holds while it is being read (OpenWindow: per layer the keys, values and EMA
// value so far). The batched forward reads a window in one piece; the decoder
// reads it a few rows at a time; both go through the same OpenWindow.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace bakallm {

// Layer i's view of the previous extended window (W + 2M + 2 rows).
struct LayerCache {
  torch::Tensor output;  // [B, Tp, D]  what the EMA continues from (layer output or input)
  torch::Tensor k;       // [B, Tp, 2D] rotated keys
  torch::Tensor v;       // [B, Tp, D]  values, before past_v_gate
  bool defined() const { return k.defined(); }
};

// Where a window sits in its stream(s): rotary positions start at `start`, or
// per row at `rows`; rows whose `keep_past` is false ignore the cache (they
// start a new document inside a batch that carries on).
struct WindowOffsets {
  int64_t start = 0;
  torch::Tensor rows = {};       // [B] int64, or undefined: every row at `start`
  torch::Tensor keep_past = {};  // [B] bool, or undefined: every row keeps its cache

  // The same window, R rows further on.
  WindowOffsets shifted(int64_t r) const;
};

struct State {
  torch::Tensor memory;             // [B, M, D]; undefined: a fresh stream
  std::vector<LayerCache> layers;   // one per layer; empty: a fresh stream
  int64_t seen = 0;                 // tokens consumed by earlier calls
  int64_t windows = 0;              // windows completed (drives detach_every)
  torch::Tensor row_seen;           // [B] int64 per-row positions, once rows differ
  torch::Tensor fresh_rows;         // [B] bool: rows that start over at the next window

  bool fresh() const { return !memory.defined(); }
  void detach_();                   // cut the graph to earlier windows
  State to(torch::Device device) const;

  // Rows where MASK [B] is true start a new stream at the next window: fresh
  // memory, no cache, position 0. Exactly as if run alone from a fresh State.
  void reset_rows(const torch::Tensor& mask);
  WindowOffsets offsets() const;
  void advance(int64_t tokens);     // after a window of TOKENS tokens

  // Data parallelism. Rows [BEGIN, BEGIN + COUNT): a rank's share of a batch.
  State rows(int64_t begin, int64_t count) const;
  // ROWS rows: the first min(ROWS, B) as they are, the others fresh.
  State resized(int64_t rows) const;
  // Every per-row tensor passed through F (one rank's rows -> all ranks'),
  // positions made per row first so that every rank holds the same tensors.
  State map_rows(const std::function<torch::Tensor(const torch::Tensor&)>& f) const;

  // As named tensors (memory, row_seen, layers.i.output/k/v) for a checkpoint,
  // and back; SOURCE names the file in errors.
  std::vector<std::pair<std::string, torch::Tensor>> tensors() const;
  static State from_tensors(const std::map<std::string, torch::Tensor>& tensors, int64_t layers,
                            const std::string& source);
};

// Rows appended along dim 1. Unreserved, each append concatenates (autograd
// sees ordinary ops: training, prefill); reserved, rows are copied into a
// buffer of fixed capacity (decoding: no allocation per token).
class RowBuffer {
 public:
  void reserve(std::vector<int64_t> shape, const torch::TensorOptions& options);  // shape[1]: capacity
  // Appends ROWS [B, n, ...]; returns every row so far.                [B, length, ...]
  torch::Tensor append(const torch::Tensor& rows);
  torch::Tensor rows() const;  // every row so far
  // Rows [FIRST, length): where they are the last append's, unreserved, that
  // tensor itself. A window's own keys and values, handed on as the next
  // window's cache, then take their gradient straight, not through a slice of
  // the concatenation (zeros of all the rows, a copy, a sum of that size).
  torch::Tensor rows_from(int64_t first) const;  // [B, length - first, ...]
  int64_t length() const { return length_; }

 private:
  torch::Tensor data_;
  torch::Tensor last_;      // unreserved: the last append's rows, from row last_first_
  int64_t last_first_ = 0;
  int64_t length_ = 0;
  bool reserved_ = false;
};

// Layer i while a window is open: the previous window's gated keys and values
// followed by this window's, the EMA value after the last row read, and the
// rows the next window's cache will hold.
struct LayerWindow {
  RowBuffer keys;        // [B, past + rows, 2D]
  RowBuffer values;      // [B, past + rows, D]
  RowBuffer sources;     // [B, rows, D] layer outputs (or inputs: mega_cache) of this window
  torch::Tensor ema;     // [B, D] EMA value after the last row (zero for a fresh stream)
  torch::Tensor alpha, q;  // [D] the EMA's coefficients, fixed while the window is open
  int64_t past = 0;      // rows of the previous window (0 for a fresh stream)
  torch::Tensor keep_past;  // [B] bool or undefined: rows that may see the previous window
  int64_t batch = 0;     // B

  int64_t rows() const { return sources.length(); }
  LayerCache cache() const;  // this window, as the next one's cache
};

// Layer i of one or more open windows read together: window j holds the next
// B_j rows of the batch. One window is training, prefill and one decoder; the
// server stacks its streams' windows (each at its own offset, with its own
// cache) so that one token of every stream runs through one product per
// weight, while each row attends only to its own window's keys.
using LayerWindows = std::vector<LayerWindow*>;

// Each window's rows of T [sum B_j, ...], in order; or T itself for one window.
template <class Window>
std::vector<torch::Tensor> split_rows(const torch::Tensor& t, const std::vector<Window*>& ws) {
  if (ws.size() == 1) return {t};
  std::vector<torch::Tensor> parts;
  int64_t first = 0;
  for (const auto* w : ws) {
    parts.push_back(t.narrow(0, first, w->batch));
    first += w->batch;
  }
  TORCH_CHECK(first == t.size(0), "split_rows: ", t.size(0), " rows for windows of ", first);
  return parts;
}

// A window being read, rows [prefix(M) ; sep0 ; tokens ; sep1 ; suffix(M)].
struct OpenWindow {
  std::vector<LayerWindow> layers;
  RowBuffer top;           // [B, rows, D] the last layer's outputs (the solidifier reads them)
  WindowOffsets offsets;   // of the window's first row
  int64_t batch = 0;       // B
  int64_t rows() const { return top.length(); }
  // Positions of the next rows of WINDOWS read together, per row on DEVICE
  // when more than one (their offsets.shifted(rows()) stacked).
  static WindowOffsets next_offsets(const std::vector<OpenWindow*>& windows, torch::Device device);
};

}  // namespace bakallm
