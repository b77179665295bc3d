#include "model/gpt_neox.h"

#include <cmath>

#include "model/mlp.h"
#include "ops/attention_weights.h"
#include "ops/dropout.h"

namespace bakallm {

namespace {
LayerNorm neox_norm(const Config& c) {
  return layer_norm(c.hidden_dim, c.layer_norm_eps);
}
}  // namespace

GptNeoxAttentionImpl::GptNeoxAttentionImpl(const Config& c)
    : query_key_value(register_module("query_key_value", Linear(c.hidden_dim, 3 * c.hidden_dim, true))),
      dense(register_module("dense", Linear(c.hidden_dim, c.hidden_dim, true))),
      heads_(c.num_heads),
      head_size_(c.hidden_dim / c.num_heads),
      rotary_(static_cast<int64_t>(static_cast<double>(c.hidden_dim / c.num_heads) * c.rotary_pct)),
      base_(c.rope_base),
      dropout_(c.attn_dropout) {}

torch::Tensor GptNeoxAttentionImpl::rotate(const torch::Tensor& x) const {
  const int64_t T = x.size(2), half = rotary_ / 2;
  auto fopt = torch::TensorOptions().dtype(torch::kFloat).device(x.device());
  auto inv_freq = 1.0 / torch::pow(base_, torch::arange(0, rotary_, 2, fopt) / static_cast<double>(rotary_));
  auto angle = torch::outer(torch::arange(T, fopt), inv_freq);  // [T, r/2]
  auto cos = angle.cos().to(x.scalar_type()), sin = angle.sin().to(x.scalar_type());
  auto a = x.narrow(-1, 0, half), b = x.narrow(-1, half, half);  // rotate_half pairs (j, j + r/2)
  return torch::cat({a * cos - b * sin, b * cos + a * sin, x.narrow(-1, rotary_, head_size_ - rotary_)}, -1);
}

torch::Tensor GptNeoxAttentionImpl::forward(const torch::Tensor& h) {
  const int64_t B = h.size(0), T = h.size(1);
  auto qkv = query_key_value(h).view({B, T, heads_, 3 * head_size_}).permute({0, 2, 1, 3});  // [B, H, T, 3hs]
  auto q = rotate(qkv.narrow(-1, 0, head_size_));
  auto k = rotate(qkv.narrow(-1, head_size_, head_size_));
  auto v = qkv.narrow(-1, 2 * head_size_, head_size_);                                        // [B, H, T, hs]
  AttentionWeightsOptions o;
  o.scale = 1.0 / std::sqrt(static_cast<double>(head_size_));
  o.dropout = dropout_;
  o.training = is_training();
  o.batch = B;
  const auto out = dense_attention(q, k, v, AttentionMask{true, 0, 0, {}}, o, compute_);  // [B, H, T, hs], causal
  return dense(out.permute({0, 2, 1, 3}).reshape({B, T, heads_ * head_size_}));
}

GptNeoxMlpImpl::GptNeoxMlpImpl(const Config& c)
    : dense_h_to_4h(register_module("dense_h_to_4h", Linear(c.hidden_dim, c.intermediate_dim, true))),
      dense_4h_to_h(register_module("dense_4h_to_h", Linear(c.intermediate_dim, c.hidden_dim, true))),
      activation_(c.activation) {}

torch::Tensor GptNeoxMlpImpl::forward(const torch::Tensor& h) {
  return dense_4h_to_h(activate(dense_h_to_4h(h), activation_));
}

GptNeoxLayerImpl::GptNeoxLayerImpl(const Config& c)
    : input_layernorm(register_module("input_layernorm", neox_norm(c))),
      post_attention_layernorm(register_module("post_attention_layernorm", neox_norm(c))),
      attention(register_module("attention", GptNeoxAttention(c))),
      mlp(register_module("mlp", GptNeoxMlp(c))),
      parallel_(c.use_parallel_residual),
      dropout_(c.hidden_dropout) {}

torch::Tensor GptNeoxLayerImpl::forward(const torch::Tensor& x) {
  auto a = hashed_dropout(attention(input_layernorm(x)), dropout_, is_training());
  if (parallel_) return x + a + hashed_dropout(mlp(post_attention_layernorm(x)), dropout_, is_training());
  auto y = x + a;
  return y + hashed_dropout(mlp(post_attention_layernorm(y)), dropout_, is_training());
}

GptNeoxNetImpl::GptNeoxNetImpl(const Config& c)
    : embed_in(register_module("embed_in", Embedding(c.vocab_size, c.hidden_dim))),
      layers(register_module("layers", torch::nn::ModuleList())),
      final_layer_norm(register_module("final_layer_norm", neox_norm(c))),
      window_(c.window_size),
      dropout_(c.hidden_dropout) {
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(GptNeoxLayer(c));
}

torch::Tensor GptNeoxNetImpl::forward(const torch::Tensor& ids) {
  TORCH_CHECK(ids.dim() == 2, "GptNeoxNet: ids must be [B, T], got ", ids.sizes());
  auto x = hashed_dropout(embed_in(ids), dropout_, is_training());  // [B, T, D]
  const int64_t T = ids.size(1);
  std::vector<torch::Tensor> outs;
  for (int64_t p = 0; p < T; p += window_) {
    auto w = x.narrow(1, p, std::min(window_, T - p));
    for (const auto& layer : *layers) w = layer->as<GptNeoxLayerImpl>()->forward(w);
    outs.push_back(w);
  }
  return outs.size() == 1 ? outs[0] : outs.empty() ? x : torch::cat(outs, 1);
}

}  // namespace bakallm
