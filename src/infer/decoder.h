// Exact incremental decoding. The state at the last window boundary (memory,
// layer caches) and the open window (BakaNet::open_window: per layer the
// keys, values and EMA value so far, in preallocated buffers): each new token
// runs one row through the same layer code as the batched forward, attending
// to the gated previous window and the rows of this window so far, so it
// costs O(W·D), never a re-run of earlier tokens. When W text tokens have
// been read the window is closed as the batched forward closes it (separator,
// suffix, solidifier: the next memory and caches). The logits equal the
// batched forward's, and memory is bounded by one window whatever the length
// of the stream.
//
// GPT-NeoX (the baseline) has no state: each window of W tokens is read alone
// by the batched forward, so the decoder keeps the open window's tokens and
// re-reads them for each new token (O(W²·D) a token, the same logits).
#pragma once
#include <optional>

#include <torch/torch.h>

#include "model/baka_lm.h"

namespace bakallm {

class Decoder {
 public:
  Decoder(BakaLM model, int64_t batch);
  // Continues from BOUNDARY, a state at a window boundary (boundary_state()
  // of an earlier decoder, e.g. read back from disk); reading the tokens read
  // since that boundary (tokens() % W of them) puts it in that decoder's state.
  Decoder(BakaLM model, int64_t batch, State boundary);

  // Reads IDS [B, n] (n >= 1) and returns the logits after its last token [B, V].
  // Whole windows go through the batched forward (prefill), the rest row by row.
  torch::Tensor feed(const torch::Tensor& ids);

  // Reads one token for each of DECODERS (ids [sum of their batches], in
  // order; one model) as rows of one batch: their open windows are stacked,
  // so every product runs once for all (the server's streams, each at its own
  // place in its own window). Returns the logits [sum B, V], each row equal to
  // what its decoder's feed of that token returns. GPT-NeoX decoders read
  // their tokens one after the other.
  static torch::Tensor feed_together(const std::vector<Decoder*>& decoders, const torch::Tensor& ids);

  int64_t tokens() const { return state_.seen + in_window_; }
  // Bytes of keys and values (every layer) the next token's attention reads
  // as things stand: what decoding reads besides the weights (0 before a
  // window is open).
  int64_t attended_bytes() const;
  int64_t batch() const { return batch_; }
  const State& boundary_state() const { return state_; }

 private:
  void open_window();   // [prefix ; sep0] read
  void close_window();  // [sep1 ; suffix] read, then the next memory and caches
  torch::Tensor feed_stateless(const torch::Tensor& ids);  // GPT-NeoX: [B, n] -> [B, D]

  BakaLM model_;
  int64_t batch_;
  State state_;                      // at the last window boundary
  std::optional<OpenWindow> window_;  // the window being read, if any
  int64_t in_window_ = 0;            // text tokens of the open window
  torch::Tensor window_ids_;         // GPT-NeoX: the open window's tokens [B, in_window_]
};

}  // namespace bakallm
