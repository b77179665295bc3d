#include "model/attention.h"

#include <cmath>

#include "model/layer_norm.h"
#include "ops/dropout.h"
#include "ops/matmul.h"

namespace bakallm {

namespace {
Linear square(int64_t dim) { return Linear(dim, dim); }
}  // namespace

QkvImpl::QkvImpl(int64_t dim, double rope_base)
    : q(register_module("q", square(dim))),
      k(register_module("k", square(dim))),
      v(register_module("v", square(dim))),
      q_norm(register_module("q_norm", layer_norm(2 * dim))),
      k_norm(register_module("k_norm", layer_norm(2 * dim))),
      negator(register_parameter("negator", torch::ones({}))),
      pos_emb(register_module("pos_emb", Rotary(dim, rope_base))) {}

torch::Tensor QkvImpl::shape(const torch::Tensor& x, torch::nn::LayerNorm& n, const WindowOffsets& o) {
  auto doubled = n(torch::cat({x, negator - x}, -1));                       // [B, T, 2D]
  return o.rows.defined() ? pos_emb->forward(doubled, o.rows) : pos_emb->forward(doubled, o.start);
}

torch::Tensor QkvImpl::query(const torch::Tensor& h, const WindowOffsets& o) { return shape(q(h), q_norm, o); }
torch::Tensor QkvImpl::key(const torch::Tensor& h, const WindowOffsets& o) { return shape(k(h), k_norm, o); }

AttentionImpl::AttentionImpl(int64_t dim, double rope_base, double dropout)
    : qkv(register_module("qkv", Qkv(dim, rope_base))),
      past_k_gate(register_module("past_k_gate", Gate(dim))),
      past_v_gate(register_module("past_v_gate", Gate(dim))),
      output_gate(register_module("output_gate", Gate(dim))),
      dim_(dim),
      dropout_(dropout) {}

torch::Tensor causal_mask(int64_t n, int64_t before, int64_t past, const torch::Tensor& keep_past,
                          torch::Device device) {
  const bool hide_past = keep_past.defined() && past > 0;
  if (n == 1 && !hide_past) return {};  // one row sees every key so far
  auto mask = torch::ones({n, before + n}, torch::TensorOptions().dtype(torch::kBool).device(device))
                  .tril(before);                                                        // [n, before+n]
  if (!hide_past) return mask;
  auto is_past = torch::arange(before + n, device).lt(past);                            // [before+n]
  auto hidden = is_past.unsqueeze(0).logical_and(keep_past.logical_not().unsqueeze(1)); // [B, before+n]
  return mask.unsqueeze(0).logical_and(hidden.logical_not().unsqueeze(1));              // [B, n, before+n]
}

torch::Tensor AttentionImpl::past_keys(const torch::Tensor& k) {
  const auto B = k.size(0), Tp = k.size(1);
  return past_k_gate(k.reshape({B, 2 * Tp, dim_})).reshape({B, Tp, 2 * dim_});
}

torch::Tensor AttentionImpl::attend(const torch::Tensor& q, const torch::Tensor& K,
                                    const torch::Tensor& V, const torch::Tensor& mask) {
  const double scale = 1.0 / std::sqrt(2.0 * static_cast<double>(dim_));
  auto scores = matmul_nt(q, K, compute_) * scale;               // [B, Tq, Tk]
  if (mask.defined())
    scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
  auto weights = torch::softmax(scores, -1, torch::kFloat);      // [B, Tq, Tk]
  weights = hashed_dropout(weights, dropout_, is_training());
  return output_gate(matmul_nt(weights, V.transpose(1, 2), compute_));  // [B, Tq, D]
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& qk_in, const torch::Tensor& v_in, LayerWindow& w,
                                     const WindowOffsets& at) {
  const int64_t n = qk_in.size(1), before = w.keys.length();
  auto q = qkv->query(qk_in, at);          // [B, n, 2D]
  auto K = w.keys.append(qkv->key(qk_in, at));  // [B, before+n, 2D]
  auto V = w.values.append(qkv->value(v_in));   // [B, before+n, D]
  return attend(q, K, V, causal_mask(n, before, w.past, w.keep_past, q.device()));
}

torch::Tensor AttentionImpl::solidify(const torch::Tensor& qk_in, const torch::Tensor& v_in,
                                      int64_t n) {
  const int64_t T = qk_in.size(1);
  auto q = qkv->query(qk_in.narrow(1, T - n, n), WindowOffsets{});  // [B, n, 2D], positions 0..n−1
  auto k = qkv->key(qk_in, WindowOffsets{});                        // [B, T, 2D], positions 0..T−1
  auto v = qkv->value(v_in);                          // [B, T, D]
  return attend(q, k, v, torch::Tensor());
}

}  // namespace bakallm
