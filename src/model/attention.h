// Single-head attention whose queries and keys are [x ; negator − x],
// layer-normed (width 2D) and rotated on the first D features (`attn.`).
#pragma once
#include <torch/torch.h>

#include "model/gate.h"
#include "model/linear.h"
#include "model/rotary.h"
#include "model/state.h"

namespace bakallm {

// q, k, v projections and the query/key shaping (`attn.qkv.`).
class QkvImpl : public torch::nn::Module {
 public:
  QkvImpl(int64_t dim, double rope_base);

  // h: [B, T, D] -> LayerNorm([W h ; negator − W h]) rotated from position start: [B, T, 2D]
  torch::Tensor query(const torch::Tensor& h, int64_t start);
  torch::Tensor key(const torch::Tensor& h, int64_t start);
  torch::Tensor query(const torch::Tensor& h, const WindowOffsets& o);
  torch::Tensor key(const torch::Tensor& h, const WindowOffsets& o);
  torch::Tensor value(const torch::Tensor& m) { return v(m); }  // [B, T, D]

  Linear q, k, v;
  torch::nn::LayerNorm q_norm, k_norm;
  torch::Tensor negator;  // scalar, init 1
  Rotary pos_emb;

 private:
  torch::Tensor shape(const torch::Tensor& x, torch::nn::LayerNorm& norm, const WindowOffsets& o);
};
TORCH_MODULE(Qkv);

struct AttentionOutput {
  torch::Tensor a;  // [B, T, D] gated attention output
  torch::Tensor k;  // [B, T, 2D] rotated keys of this window (next window's cache)
  torch::Tensor v;  // [B, T, D] values of this window, ungated
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, double rope_base, double dropout);

  // Causal attention over one extended window at positions offset..offset+T−1,
  // preceded by the gated keys/values of the previous window when cache is set.
  AttentionOutput forward(const torch::Tensor& qk_in, const torch::Tensor& v_in,
                          const LayerCache* cache, const WindowOffsets& offsets);

  // The solidifier's attention: the last n rows query (positions 0..n−1)
  // every row (positions 0..T−1), no mask.                          -> [B, n, D]
  torch::Tensor solidify(const torch::Tensor& qk_in, const torch::Tensor& v_in, int64_t n);

  // Gated past keys [B, Tp, 2D] (each D-wide half gated alone) and values [B, Tp, D].
  torch::Tensor past_keys(const torch::Tensor& k);
  torch::Tensor past_values(const torch::Tensor& v) { return past_v_gate(v); }

  // softmax(q Kᵀ / sqrt(2D) + mask) V, then output_gate. q [B,Tq,2D], K [B,Tk,2D],
  // V [B,Tk,D], mask [Tq,Tk] bool (true = may attend) or undefined.  -> [B, Tq, D]
  torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& K, const torch::Tensor& V,
                       const torch::Tensor& mask);

  Qkv qkv;
  Gate past_k_gate, past_v_gate, output_gate;

  void set_compute_dtype(torch::ScalarType dtype) { compute_ = dtype; }

 private:
  torch::ScalarType compute_ = torch::kFloat;
  int64_t dim_;
  double dropout_;
};
TORCH_MODULE(Attention);

// Query row t of T sees the first `past` keys and keys past..past+t.  [T, past+T] bool
torch::Tensor causal_mask(int64_t T, int64_t past, torch::Device device);
// The same per row, hiding the past keys of rows whose keep_past is false. [B, T, past+T]
torch::Tensor causal_mask(int64_t T, int64_t past, const torch::Tensor& keep_past);

}  // namespace bakallm
