#include "model/block.h"

namespace bakallm {

namespace {
torch::nn::LayerNorm norm(int64_t dim) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5));
}
}  // namespace

BlockImpl::BlockImpl(const Config& c)
    : mega(register_module("mega", Mega(c.hidden_dim))),
      norm_mega(register_module("norm_mega", norm(c.hidden_dim))),
      norm_input(register_module("norm_input", norm(c.hidden_dim))),
      mlp_attn_norm(register_module("mlp_attn_norm", norm(c.hidden_dim))),
      attn(register_module("attn", Attention(c.hidden_dim, c.rope_base, c.attn_dropout))),
      mlp(register_module("mlp", Mlp(c.hidden_dim, c.intermediate_dim))),
      mlp_attn_gate(register_module("mlp_attn_gate", Linear(c.hidden_dim, c.hidden_dim))),
      mega_gate(register_module("mega_gate", Linear(c.hidden_dim, c.hidden_dim, /*bias=*/true))),
      mega_cache_(c.mega_cache) {}

torch::Tensor BlockImpl::combine(const torch::Tensor& x, const torch::Tensor& h,
                                 const torch::Tensor& m, const torch::Tensor& a) {
  auto gated_mlp = mlp(h) * torch::sigmoid(mlp_attn_gate(mlp_attn_norm(a)));  // [B, T, D]
  auto g = m * torch::sigmoid(mega_gate(m));                                  // [B, T, D]
  return x + a + gated_mlp + g;
}

BlockOutput BlockImpl::forward(const torch::Tensor& x, const LayerCache* cache, const WindowOffsets& offsets) {
  const bool cached = cache && cache->defined();
  torch::Tensor prev;  // [B, Tp, D]; zero rows restart the EMA exactly (y_{-1} = 0)
  if (cached)
    prev = offsets.keep_past.defined() ? cache->output * offsets.keep_past.view({-1, 1, 1}).to(x.scalar_type())
                                       : cache->output;
  auto m = norm_mega(mega(x, prev));                                      // [B, T, D]
  auto h = norm_input(x);                                                 // [B, T, D]
  auto att = attn(h, m, cache, offsets);
  auto out = combine(x, h, m, att.a);
  const auto& ema_source = mega_cache_ == MegaCache::kPreviousLayerOutput ? out : x;
  return {out, LayerCache{ema_source, att.k, att.v}};
}

torch::Tensor BlockImpl::solidify(const torch::Tensor& x, int64_t n) {
  const int64_t T = x.size(1);
  auto m = norm_mega(mega(x, torch::Tensor()));  // [B, T, D], causal EMA over all rows
  auto h = norm_input(x);                        // [B, T, D]
  auto a = attn->solidify(h, m, n);              // [B, n, D]
  auto tail = [&](const torch::Tensor& t) { return t.narrow(1, T - n, n); };
  return combine(tail(x), tail(h), tail(m), a);  // [B, n, D]
}

}  // namespace bakallm
