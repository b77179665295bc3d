// Single-head attention whose queries and keys are [x ; negator − x],
// layer-normed (width 2D) and rotated on the first D features (`attn.`).
// Switches: num_heads (the Q/K and V features split evenly), negator off (Q/K are x, D wide, scale 1/sqrt(D)), qk_norm off
// (no q_norm/k_norm), past_kv_gates off (the previous window's keys and
// values are used as they are).
#pragma once
#include <torch/torch.h>

#include "model/config.h"
#include "model/gate.h"
#include "model/layer_norm.h"
#include "model/linear.h"
#include "model/rotary.h"
#include "model/state.h"
#include "ops/block_attention.h"

namespace bakallm {

// q, k, v projections and the query/key shaping (`attn.qkv.`).
class QkvImpl : public torch::nn::Module {
 public:
  explicit QkvImpl(const Config& config);

  // The rotation's angles for the rows of h [B, T, ·] from the window's
  // position (o.start, or o.rows per row): a row's query and key share them.
  RotaryImpl::Angles angles(const torch::Tensor& h, const WindowOffsets& o) const;
  // h: [B, T, D] -> LayerNorm([W h ; negator − W h]) rotated by A (angles(h, o)): [B, T, 2D]
  torch::Tensor query(const torch::Tensor& h, const RotaryImpl::Angles& a);
  torch::Tensor key(const torch::Tensor& h, const RotaryImpl::Angles& a);
  torch::Tensor value(const torch::Tensor& m) { return v(m); }  // [B, T, D]

  int64_t width() const { return width_; }  // of Q and K: 2D, or D without the negator

  Linear q, k, v;
  LayerNorm q_norm{nullptr}, k_norm{nullptr};  // absent without qk_norm
  torch::Tensor negator;  // scalar, init 1; undefined when the switch is off
  Rotary pos_emb{nullptr};

 private:
  torch::Tensor shape(Linear& fc, const torch::Tensor& h, LayerNorm& norm, const RotaryImpl::Angles& a);
  int64_t width_;
};
TORCH_MODULE(Qkv);

class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const Config& config);
  int64_t key_width() const { return qkv->width(); }

  // Rows of open windows (one, or several stacked along the batch: BlockImpl::
  // forward) at positions AT: their keys and values are appended to their
  // window's, and each row attends causally to every key of its window so far
  // (the gated previous window's, unless its keep_past is false, and this
  // window's). qk_in [B, n, D] (normed input), v_in [B, n, D] (normed EMA).
  //                                                                 -> [B, n, D]
  torch::Tensor forward(const torch::Tensor& qk_in, const torch::Tensor& v_in, const LayerWindows& ws,
                        const WindowOffsets& at);

  // The solidifier's attention: the last n rows query (positions 0..n−1)
  // every row (positions 0..T−1), no mask.                          -> [B, n, D]
  torch::Tensor solidify(const torch::Tensor& qk_in, const torch::Tensor& v_in, int64_t n);

  // Gated past keys [B, Tp, 2D] (each D-wide half gated alone) and values [B, Tp, D].
  torch::Tensor past_keys(const torch::Tensor& k);
  torch::Tensor past_values(const torch::Tensor& v) { return past_v_gate ? past_v_gate(v) : v; }

  Qkv qkv;
  Gate past_k_gate{nullptr}, past_v_gate{nullptr}, output_gate{nullptr};  // past gates absent when switched off

  void set_compute_dtype(torch::ScalarType dtype) { compute_ = dtype; }

 private:
  // softmax(q Kᵀ / sqrt(2D) + mask) V, before the output gate: dense (the
  // [Tq, Tk] weights held), by blocks (ops/block_attention.h) or one pass per
  // decoded row (ops/row_attention.h), as choose_attention_kernel decides
  // (ops/attention_kernel.h); the same values every way (tested).
  // q [B,Tq,2D], K [B,Tk,2D], V [B,Tk,D].                          -> [B, Tq, D]
  torch::Tensor weigh(const torch::Tensor& q, const torch::Tensor& K, const torch::Tensor& V, const AttentionMask& mask);

  torch::ScalarType compute_ = torch::kFloat;
  int64_t dim_;
  int64_t heads_;
  double dropout_;
};
TORCH_MODULE(Attention);

}  // namespace bakallm
