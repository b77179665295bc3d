#include "model/block.h"

#include "model/layer_norm.h"

namespace bakallm {

BlockImpl::BlockImpl(const Config& c)
    : mega(register_module("mega", Mega(c.hidden_dim))),
      norm_mega(register_module("norm_mega", layer_norm(c.hidden_dim))),
      norm_input(register_module("norm_input", layer_norm(c.hidden_dim))),
      mlp_attn_norm(register_module("mlp_attn_norm", layer_norm(c.hidden_dim))),
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

LayerWindow BlockImpl::open(const LayerCache* cache, const torch::Tensor& keep_past, int64_t B,
                            const torch::TensorOptions& options, int64_t reserve) {
  LayerWindow w;
  std::tie(w.alpha, w.q) = mega->coefficients();
  const bool cached = cache && cache->defined();
  const int64_t D = w.alpha.size(0);
  w.past = cached ? cache->k.size(1) : 0;
  w.keep_past = cached ? keep_past : torch::Tensor();
  if (reserve > 0) {
    w.keys.reserve({B, w.past + reserve, 2 * D}, options);
    w.values.reserve({B, w.past + reserve, D}, options);
    w.sources.reserve({B, reserve, D}, options);
  }
  if (!cached) return w;  // y_{-1} = 0, nothing to attend to before the window
  w.keys.append(attn->past_keys(cache->k));      // [B, Tp, 2D]
  w.values.append(attn->past_values(cache->v));  // [B, Tp, D]
  w.ema = mega->state_after(cache->output, w.alpha, w.q);  // [B, D]
  if (w.keep_past.defined()) w.ema = w.ema * w.keep_past.view({-1, 1}).to(w.ema.scalar_type());  // restarted rows: 0
  return w;
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, LayerWindow& w, const WindowOffsets& at) {
  auto y = mega->continued(x, w.ema, w.alpha, w.q);    // [B, n, D]
  w.ema = y.select(1, y.size(1) - 1);                   // [B, D]
  auto m = norm_mega(y);                                // [B, n, D]
  auto h = norm_input(x);                               // [B, n, D]
  auto a = attn(h, m, w, at);                           // [B, n, D]
  auto out = combine(x, h, m, a);                       // [B, n, D]
  w.sources.append(mega_cache_ == MegaCache::kPreviousLayerOutput ? out : x);
  return out;
}

torch::Tensor BlockImpl::solidify(const torch::Tensor& x, int64_t n) {
  const int64_t T = x.size(1);
  auto m = norm_mega(mega(x));                   // [B, T, D], causal EMA over all rows
  auto h = norm_input(x);                        // [B, T, D]
  auto a = attn->solidify(h, m, n);              // [B, n, D]
  auto tail = [&](const torch::Tensor& t) { return t.narrow(1, T - n, n); };
  return combine(tail(x), tail(h), tail(m), a);  // [B, n, D]
}

}  // namespace bakallm
