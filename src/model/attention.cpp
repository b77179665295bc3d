#include "model/attention.h"

#include <cmath>

#include "model/dropout.h"
#include "model/matmul.h"

namespace bakallm {

namespace {
Linear square(int64_t dim) { return Linear(dim, dim); }
torch::nn::LayerNorm norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5));
}
}  // namespace

QkvImpl::QkvImpl(int64_t dim, double rope_base)
    : q(register_module("q", square(dim))),
      k(register_module("k", square(dim))),
      v(register_module("v", square(dim))),
      q_norm(register_module("q_norm", norm(2 * dim))),
      k_norm(register_module("k_norm", norm(2 * dim))),
      negator(register_parameter("negator", torch::ones({}))),
      pos_emb(register_module("pos_emb", Rotary(dim, rope_base))) {}

torch::Tensor QkvImpl::shape(const torch::Tensor& x, torch::nn::LayerNorm& n, const WindowOffsets& o) {
  auto doubled = n(torch::cat({x, negator - x}, -1));                       // [B, T, 2D]
  return o.rows.defined() ? pos_emb->forward(doubled, o.rows) : pos_emb->forward(doubled, o.start);
}

torch::Tensor QkvImpl::query(const torch::Tensor& h, const WindowOffsets& o) { return shape(q(h), q_norm, o); }
torch::Tensor QkvImpl::key(const torch::Tensor& h, const WindowOffsets& o) { return shape(k(h), k_norm, o); }
torch::Tensor QkvImpl::query(const torch::Tensor& h, int64_t start) { return query(h, WindowOffsets{start}); }
torch::Tensor QkvImpl::key(const torch::Tensor& h, int64_t start) { return key(h, WindowOffsets{start}); }

AttentionImpl::AttentionImpl(int64_t dim, double rope_base, double dropout)
    : qkv(register_module("qkv", Qkv(dim, rope_base))),
      past_k_gate(register_module("past_k_gate", Gate(dim))),
      past_v_gate(register_module("past_v_gate", Gate(dim))),
      output_gate(register_module("output_gate", Gate(dim))),
      dim_(dim),
      dropout_(dropout) {}

torch::Tensor causal_mask(int64_t T, int64_t past, torch::Device device) {
  return torch::ones({T, past + T}, torch::TensorOptions().dtype(torch::kBool).device(device))
      .tril(past);
}

torch::Tensor causal_mask(int64_t T, int64_t past, const torch::Tensor& keep_past) {
  auto mask = causal_mask(T, past, keep_past.device()).clone();                    // [T, past+T]
  auto is_past = torch::arange(past + T, keep_past.device()).lt(past);              // [past+T]
  auto hidden = is_past.unsqueeze(0).logical_and(keep_past.logical_not().unsqueeze(1));  // [B, past+T]
  return mask.unsqueeze(0).logical_and(hidden.logical_not().unsqueeze(1));         // [B, T, past+T]
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

AttentionOutput AttentionImpl::forward(const torch::Tensor& qk_in, const torch::Tensor& v_in,
                                       const LayerCache* cache, const WindowOffsets& offsets) {
  const int64_t T = qk_in.size(1);
  auto q = qkv->query(qk_in, offsets);  // [B, T, 2D]
  auto k = qkv->key(qk_in, offsets);    // [B, T, 2D]
  auto v = qkv->value(v_in);           // [B, T, D]
  torch::Tensor K = k, V = v;
  int64_t past = 0;
  if (cache && cache->defined()) {
    past = cache->k.size(1);
    K = torch::cat({past_keys(cache->k), k}, 1);  // [B, Tp+T, 2D]
    V = torch::cat({past_values(cache->v), v}, 1);  // [B, Tp+T, D]
  }
  auto mask = past && offsets.keep_past.defined() ? causal_mask(T, past, offsets.keep_past)
                                                  : causal_mask(T, past, q.device());
  auto a = attend(q, K, V, mask);
  return {a, k, v};
}

torch::Tensor AttentionImpl::solidify(const torch::Tensor& qk_in, const torch::Tensor& v_in,
                                      int64_t n) {
  const int64_t T = qk_in.size(1);
  auto q = qkv->query(qk_in.narrow(1, T - n, n), 0);  // [B, n, 2D]
  auto k = qkv->key(qk_in, 0);                        // [B, T, 2D]
  auto v = qkv->value(v_in);                          // [B, T, D]
  return attend(q, k, v, torch::Tensor());
}

}  // namespace bakallm
