// BakaBlock (`model.layers.i.`), for rows x of an open window (all of it in
// training and prefill, one row per decoded token):
//   m   = norm_mega( mega(x, from the EMA value before x) )
//   h   = norm_input(x)
//   a   = attn(qk_in = h, v_in = m, the window's keys and values so far)
//   mlp = mlp(h) ⊙ sigmoid( mlp_attn_gate( mlp_attn_norm(a) ) )
//   g   = m ⊙ sigmoid( mega_gate(m) )          (mega_gate has a bias)
//   out = x + a + mlp + g
// The switches of docs/VARIANTS.md change this here and nowhere else:
// ema_input (queries_keys: qk_in = m, v_in = h; none: no m, no g), mlp_gate
// (self: sigmoid(mlp_attn_gate(h)); none: no gate), mega_gate (no g).
#pragma once
#include <torch/torch.h>

#include "model/attention.h"
#include "model/config.h"
#include "model/linear.h"
#include "model/mega.h"
#include "model/mlp.h"
#include "model/shared_input.h"
#include "model/state.h"

namespace bakallm {

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const Config& config);

  // Opens this layer's window after CACHE (nullptr or undefined: a fresh
  // stream) for a batch of B rows: the gated previous keys and values, and the
  // EMA value at the end of the cached rows. Rows whose KEEP_PAST [B] is false
  // see none of it. RESERVE > 0 preallocates room for that many rows, the
  // keys and values in KV_DTYPE (BakaNet::set_cache_dtype), the rest in OPTIONS.
  LayerWindow open(const LayerCache* cache, const torch::Tensor& keep_past, int64_t batch,
                   const torch::TensorOptions& options, int64_t reserve, torch::ScalarType kv_dtype);

  // Rows x [B, n, D] of the open windows WS (one, or several stacked along the
  // batch) at positions AT: causal over each window's rows so far and its
  // previous window.                                                 -> [B, n, D]
  torch::Tensor forward(const torch::Tensor& x, const LayerWindows& ws, const WindowOffsets& at);

  // The memory solidifier's pass: no cache, not causal; attention and MLP for
  // the last n rows only, whose output [B, n, D] is returned.
  torch::Tensor solidify(const torch::Tensor& x, int64_t n);

  Mega mega{nullptr};                        // absent when ema_input is none
  LayerNorm norm_mega{nullptr}, norm_input{nullptr}, mlp_attn_norm{nullptr};
  Attention attn{nullptr};
  Mlp mlp{nullptr};
  Linear mlp_attn_gate{nullptr}, mega_gate{nullptr};  // absent when their switch is off

 private:
  // x + a + mlp(h) ⊙ sigmoid(mlp_attn_gate(mlp_attn_norm(a))) + m ⊙ sigmoid(mega_gate(m))
  torch::Tensor combine(const torch::Tensor& x, const torch::Tensor& h, const torch::Tensor& m,
                        const torch::Tensor& a);

  // The EMA values the windows' rows continue from, stacked [B, D] (undefined: all 0).
  static torch::Tensor ema_before(const LayerWindows& ws, const torch::Tensor& x);

  Config config_;
  // The products of h, and of m, each run as one at inference (model/shared_input.h); null with one product.
  std::shared_ptr<SharedInput> of_h_, of_m_;
};
TORCH_MODULE(Block);

}  // namespace bakallm
