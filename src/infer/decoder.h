// Exact incremental decoding. The state at the last window boundary (memory,
// layer caches) plus, per layer, the current window's keys, values, outputs
// and EMA value: each new token runs one row through every layer, attending
// to the gated previous window and the rows of this window so far, so it
// costs O(W·D), never a re-run of earlier tokens. When W text tokens have
// been read, the window is finished as the batched forward does it
// (separator, suffix, solidifier: the next memory and caches). The logits
// equal the batched forward's, and memory is bounded by one window whatever
// the length of the stream.
#pragma once
#include <vector>

#include <torch/torch.h>

#include "model/baka_lm.h"

namespace bakallm {

class Decoder {
 public:
  Decoder(BakaLM model, int64_t batch);

  // Reads IDS [B, n] (n >= 1) and returns the logits after its last token [B, V].
  // Whole windows go through the batched forward (prefill), the rest row by row.
  torch::Tensor feed(const torch::Tensor& ids);

  int64_t tokens() const { return state_.seen + in_window_; }
  const State& boundary_state() const { return state_; }

 private:
  // Per layer, the open window: buffers sized for the previous window's rows
  // plus a whole extended window.
  struct WindowLayer {
    torch::Tensor keys;     // [B, Tp + T, 2D]: gated past keys, then this window's
    torch::Tensor values;   // [B, Tp + T, D]
    torch::Tensor outputs;  // [B, T, D] this window's layer outputs
    torch::Tensor inputs;   // [B, T, D] this window's layer inputs (mega_cache = input)
    torch::Tensor ema;      // [B, D] EMA value after the last row
    torch::Tensor alpha, q; // [D] the layer's EMA coefficients (fixed while decoding)
    int64_t past = 0;       // Tp
  };

  void open_window();
  torch::Tensor extend(torch::Tensor x);  // rows [B, n, D] through every layer -> last layer [B, n, D]
  torch::Tensor extend_layer(size_t i, const torch::Tensor& x, int64_t position);
  void close_window();
  torch::Tensor prefill_window(const torch::Tensor& ids);  // a whole window, batched: -> [B, V]

  BakaLM model_;
  int64_t batch_;
  State state_;                   // at the last window boundary
  std::vector<WindowLayer> layers_;
  bool open_ = false;
  int64_t rows_ = 0;              // extended-window rows processed (prefix and sep0 included)
  int64_t in_window_ = 0;         // text tokens of the open window
};

}  // namespace bakallm
