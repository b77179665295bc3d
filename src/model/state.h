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

struct State {
  torch::Tensor memory;             // [B, M, D]; undefined: a fresh stream
  std::vector<LayerCache> layers;   // one per layer; empty: a fresh stream
  int64_t seen = 0;                 // tokens consumed by earlier calls
  int64_t windows = 0;              // windows completed (drives detach_every)

  bool fresh() const { return !memory.defined(); }
  void detach_();                   // cut the graph to earlier windows
  State to(torch::Device device) const;
};

}  // namespace bakallm
