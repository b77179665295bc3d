#include "model/block.h"

#include "model/layer_norm.h"
#include "ops/fast_tensor.h"
#include "ops/gate.h"

namespace bakallm {

namespace {
// Whether the attention's queries and keys, and its values, read m (else h): config ema_input.
bool queries_keys_read_m(const Config& c) { return c.ema_input == EmaInput::kQueriesKeys; }
bool values_read_m(const Config& c) { return c.ema_input == EmaInput::kValues; }
}  // namespace

BlockImpl::BlockImpl(const Config& c) : config_(c) {
  const int64_t D = c.hidden_dim;
  const bool ema = c.ema_input != EmaInput::kNone;
  // Registered in the prototype's order: a seed gives its initial values.
  if (ema) mega = register_module("mega", Mega(D));
  if (ema) norm_mega = register_module("norm_mega", layer_norm(D));
  norm_input = register_module("norm_input", layer_norm(D));
  if (c.mlp_gate == MlpGate::kAttention) mlp_attn_norm = register_module("mlp_attn_norm", layer_norm(D));
  attn = register_module("attn", Attention(c));
  mlp = register_module("mlp", Mlp(D, c.intermediate_dim, c.activation));
  if (c.mlp_gate != MlpGate::kNone) mlp_attn_gate = register_module("mlp_attn_gate", Linear(D, D));
  if (ema && c.mega_gate) mega_gate = register_module("mega_gate", Linear(D, D, /*bias=*/true));
  // Which products read h and which m, in the order forward runs them.
  std::vector<LinearImpl*> of_h, of_m;
  auto& qk = queries_keys_read_m(c) ? of_m : of_h;
  qk.insert(qk.end(), {attn->qkv->q.get(), attn->qkv->k.get()});
  (values_read_m(c) ? of_m : of_h).push_back(attn->qkv->v.get());
  of_h.insert(of_h.end(), {mlp->fc_gate.get(), mlp->fc_up.get()});
  if (c.mlp_gate == MlpGate::kSelf) of_h.push_back(mlp_attn_gate.get());
  if (mega_gate) of_m.push_back(mega_gate.get());
  if (of_h.size() > 1) of_h_ = SharedInput::make(of_h);
  if (of_m.size() > 1) of_m_ = SharedInput::make(of_m);
}

torch::Tensor BlockImpl::combine(const torch::Tensor& x, const torch::Tensor& h,
                                 const torch::Tensor& m, const torch::Tensor& a) {
  // x + a + mlp(h) ⊙ σ(gate) + m ⊙ σ(mega_gate(m)), each gate and its sum one op (ops/gate.h);
  // the gates' products, and the MLP's output where a gate reads it, only feed
  // them: in the products' dtype (ops/matmul.h's inner_dtype)
  auto out = add_rows(x, a);                                                       // [B, T, D]
  if (config_.mlp_gate == MlpGate::kNone) {
    out = out + mlp(h);
  } else {
    const auto m_out = mlp->gated(h);  // [B, T, D], before its gate's product, in this order
    const auto z = config_.mlp_gate == MlpGate::kAttention ? mlp_attn_gate->inner(mlp_attn_norm(a))
                                                           : mlp_attn_gate->inner(h);  // kSelf
    out = sigmoid_gate(m_out, z, out);
  }
  if (mega_gate) out = sigmoid_gate(m, mega_gate->inner(m), out);                  // [B, T, D]
  return out;
}

LayerWindow BlockImpl::open(const LayerCache* cache, const torch::Tensor& keep_past, int64_t B,
                            const torch::TensorOptions& options, int64_t reserve, torch::ScalarType kv_dtype) {
  LayerWindow w;
  w.batch = B;
  if (mega) std::tie(w.alpha, w.q) = mega->coefficients();
  const bool cached = cache && cache->defined();
  const int64_t D = config_.hidden_dim;
  w.past = cached ? cache->k.size(1) : 0;
  w.keep_past = cached ? keep_past : torch::Tensor();
  if (reserve > 0) {
    w.keys.reserve({B, w.past + reserve, attn->key_width()}, options.dtype(kv_dtype));
    w.values.reserve({B, w.past + reserve, D}, options.dtype(kv_dtype));
    w.sources.reserve({B, reserve, D}, options);
  }
  if (!cached) return w;  // y_{-1} = 0, nothing to attend to before the window
  w.keys.append(attn->past_keys(cache->k));      // [B, Tp, 2D]
  w.values.append(attn->past_values(cache->v));  // [B, Tp, D]
  if (!mega) return w;
  w.ema = mega->state_after(cache->output, w.alpha, w.q);  // [B, D]
  if (w.keep_past.defined()) w.ema = w.ema * w.keep_past.view({-1, 1}).to(w.ema.scalar_type());  // restarted rows: 0
  return w;
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const LayerWindows& ws, const WindowOffsets& at) {
  torch::Tensor m;                                      // [B, n, D], undefined without an EMA
  if (mega) {
    const auto& w0 = *ws[0];                            // alpha, q: the model's, the same in every window
    auto y = mega->continued(x, ema_before(ws, x), w0.alpha, w0.q);  // [B, n, D]
    const auto last = split_rows(select_rows(y, 1, y.size(1) - 1), ws);  // [B_j, D]
    for (size_t j = 0; j < ws.size(); ++j) ws[j]->ema = last[j];
    m = norm_mega(y);
  }
  auto h = norm_input(x);                               // [B, n, D]
  const SharedInput::Scope h_products(of_h_, h), m_products(of_m_, m);  // each input's products as one, if packed
  const auto& qk_in = queries_keys_read_m(config_) ? m : h;
  const auto& v_in = values_read_m(config_) ? m : h;
  auto a = attn(qk_in, v_in, ws, at);                   // [B, n, D]
  auto out = combine(x, h, m, a);                       // [B, n, D]
  const auto sources = split_rows(config_.mega_cache == MegaCache::kPreviousLayerOutput ? out : x, ws);
  for (size_t j = 0; j < ws.size(); ++j) ws[j]->sources.append(sources[j]);
  return out;
}

torch::Tensor BlockImpl::ema_before(const LayerWindows& ws, const torch::Tensor& x) {
  if (ws.size() == 1) return ws[0]->ema;  // undefined for a fresh stream: the scan starts from 0
  std::vector<torch::Tensor> parts;
  bool any = false;
  for (const auto* w : ws) {
    any = any || w->ema.defined();
    parts.push_back(w->ema.defined() ? w->ema : torch::zeros({w->batch, x.size(2)}, x.options()));
  }
  return any ? torch::cat(parts) : torch::Tensor();  // [B, D]
}

torch::Tensor BlockImpl::solidify(const torch::Tensor& x, int64_t n) {
  const int64_t T = x.size(1);
  torch::Tensor m;
  if (mega) m = norm_mega(mega(x));              // [B, T, D], causal EMA over all rows
  auto h = norm_input(x);                        // [B, T, D]
  const auto& qk_in = queries_keys_read_m(config_) ? m : h;
  const auto& v_in = values_read_m(config_) ? m : h;
  auto a = attn->solidify(qk_in, v_in, n);       // [B, n, D]
  auto tail = [&](const torch::Tensor& t) { return t.defined() ? t.narrow(1, T - n, n) : t; };
  return combine(tail(x), tail(h), tail(m), a);  // [B, n, D]
}

}  // namespace bakallm
