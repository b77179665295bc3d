// What a stream hands from one call to the next: the memory for the next
// window's prefix, one cache per layer (the previous window), tokens seen.
#pragma once
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
  torch::Tensor rows;       // [B] int64, or undefined: every row at `start`
  torch::Tensor keep_past;  // [B] bool, or undefined: every row keeps its cache
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
};

}  // namespace bakallm
