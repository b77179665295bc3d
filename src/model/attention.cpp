#include "model/attention.h"

#include <cmath>

#include "model/layer_norm.h"
#include "ops/attention_weights.h"
#include "ops/autograd.h"
#include "ops/block_attention.h"
#include "ops/negated_norm.h"
#include "ops/rotary.h"
#include "ops/row_attention.h"

namespace bakallm {

namespace {
Linear square(int64_t dim) { return Linear(dim, dim); }
}  // namespace

QkvImpl::QkvImpl(const Config& c)
    : q(register_module("q", square(c.hidden_dim))),
      k(register_module("k", square(c.hidden_dim))),
      v(register_module("v", square(c.hidden_dim))),
      width_(c.negator ? 2 * c.hidden_dim : c.hidden_dim) {
  if (c.qk_norm) {
    q_norm = register_module("q_norm", layer_norm(width_));
    k_norm = register_module("k_norm", layer_norm(width_));
  }
  if (c.negator) negator = register_parameter("negator", torch::ones({}));
  pos_emb = register_module("pos_emb", Rotary(c.hidden_dim, c.rope_base));
}

RotaryImpl::Angles QkvImpl::angles(const torch::Tensor& h, const WindowOffsets& o) const {
  return o.rows.defined() ? pos_emb->angles(h, o.rows) : pos_emb->angles(h, o.start);
}

torch::Tensor QkvImpl::shape(Linear& fc, const torch::Tensor& h, LayerNorm& n, const RotaryImpl::Angles& a) {
  if (negator.defined() && n)  // the three steps below as one op, fc(h) its only reader: in the products' dtype
    return negated_norm_rotary(fc->inner(h), negator, n->weight, n->bias, n->options.eps(), a.cos, a.sin);  // [B, T, 2D]
  const auto x = fc(h);                                                   // [B, T, D]
  auto y = negator.defined() ? torch::cat({x, negator - x}, -1) : x;    // [B, T, width]
  if (n) y = n(y);
  return rotate_pairs(y, a.cos, a.sin, x.size(-1));
}

torch::Tensor QkvImpl::query(const torch::Tensor& h, const RotaryImpl::Angles& a) { return shape(q, h, q_norm, a); }
torch::Tensor QkvImpl::key(const torch::Tensor& h, const RotaryImpl::Angles& a) { return shape(k, h, k_norm, a); }

AttentionImpl::AttentionImpl(const Config& c)
    : qkv(register_module("qkv", Qkv(c))), dim_(c.hidden_dim), heads_(c.num_heads), dropout_(c.attn_dropout) {
  if (c.past_kv_gates) {
    past_k_gate = register_module("past_k_gate", Gate(c.hidden_dim));
    past_v_gate = register_module("past_v_gate", Gate(c.hidden_dim));
  }
  output_gate = register_module("output_gate", Gate(c.hidden_dim));
}

torch::Tensor AttentionImpl::past_keys(const torch::Tensor& k) {
  if (!past_k_gate) return k;
  const auto B = k.size(0), Tp = k.size(1), halves = k.size(2) / dim_;  // each D-wide half gated alone
  return past_k_gate(k.reshape({B, halves * Tp, dim_})).reshape({B, Tp, halves * dim_});
}

torch::Tensor AttentionImpl::weigh(const torch::Tensor& q_in, const torch::Tensor& K_in, const torch::Tensor& V_in,
                                   const AttentionMask& m) {
  // H heads split the features evenly: [B, T, F] -> [B, H, T, F/H] (one head: as is).
  auto split = [&](const torch::Tensor& t) {
    return heads_ == 1 ? t : t.unflatten(-1, {heads_, t.size(-1) / heads_}).transpose(1, 2);
  };
  auto q = split(q_in), K = split(K_in), V = split(V_in);
  const int64_t B = q_in.size(0), Tq = q.size(-2), Tk = K.size(-2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor out;                                             // [B, (H,) Tq, D/H]
  const bool inference = !wants_grad(q, K, V) && !(is_training() && dropout_ > 0) && compute_ == torch::kFloat &&
                         q.scalar_type() == torch::kFloat;
  // The row and block kernels take the heads folded into the batch: [B·H, T, F/H].
  auto fold = [&](const torch::Tensor& t) { return heads_ == 1 ? t : t.flatten(0, 1); };
  auto folded = [&] {
    auto f = m;
    if (m.keep_past.defined() && heads_ > 1) f.keep_past = m.keep_past.repeat_interleave(heads_);
    return f;
  };
  const auto kernel = choose_attention_kernel(q_in.device(), B * heads_, Tq, Tk, inference);
  if (kernel != AttentionKernel::kRows && K.scalar_type() != q.scalar_type()) {  // a bfloat16 cache: only rows read it as is
    K = K.to(q.scalar_type());
    V = V.to(q.scalar_type());
  }
  BlockAttentionOptions o;  // the blocks' and the dense attention's (its AttentionWeightsOptions part)
  o.scale = scale;
  o.dropout = dropout_;
  o.training = is_training();
  o.batch = B;
  o.compute = compute_;
  if (kernel == AttentionKernel::kRows) {
    out = row_attention(fold(q), fold(K), fold(V), folded(), scale);
    if (heads_ > 1) out = out.unflatten(0, {B, heads_});
  } else if (kernel == AttentionKernel::kBlocks) {
    out = block_attention(fold(q), fold(K), fold(V), folded(), o);
    if (heads_ > 1) out = out.unflatten(0, {B, heads_});
  } else {
    out = dense_attention(q, K, V, folded(), o, compute_);  // [B, (H,) Tq, D/H]
  }
  if (heads_ > 1) out = out.transpose(1, 2).flatten(-2);          // [B, Tq, D]
  return out;
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& qk_in, const torch::Tensor& v_in, const LayerWindows& ws,
                                     const WindowOffsets& at) {
  const auto angles = qkv->angles(qk_in, at);
  const auto q = split_rows(qkv->query(qk_in, angles), ws);  // [B_j, n, 2D] each
  const auto k = split_rows(qkv->key(qk_in, angles), ws);
  const auto v = split_rows(qkv->value(v_in), ws);       // [B_j, n, D] each
  std::vector<torch::Tensor> out;                        // each window attends to its own keys alone
  for (size_t j = 0; j < ws.size(); ++j) {
    auto& w = *ws[j];
    const int64_t before = w.keys.length();
    auto K = w.keys.append(k[j]);    // [B_j, before+n, 2D]
    auto V = w.values.append(v[j]);  // [B_j, before+n, D]
    out.push_back(weigh(q[j], K, V, AttentionMask{true, before, w.past, w.keep_past}));
  }
  return output_gate(out.size() == 1 ? out[0] : torch::cat(out));  // [B, n, D]
}

torch::Tensor AttentionImpl::solidify(const torch::Tensor& qk_in, const torch::Tensor& v_in,
                                      int64_t n) {
  const int64_t T = qk_in.size(1);
  const auto tail = qk_in.narrow(1, T - n, n);
  auto q = qkv->query(tail, qkv->angles(tail, WindowOffsets{}));      // [B, n, 2D], positions 0..n−1
  auto k = qkv->key(qk_in, qkv->angles(qk_in, WindowOffsets{}));      // [B, T, 2D], positions 0..T−1
  auto v = qkv->value(v_in);                          // [B, T, D]
  return output_gate(weigh(q, k, v, AttentionMask{}));
}

}  // namespace bakallm
