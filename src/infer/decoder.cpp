#include "infer/decoder.h"

#include "model/ema.h"

namespace bakallm {

Decoder::Decoder(BakaLM model, int64_t batch) : model_(std::move(model)), batch_(batch) {}

void Decoder::open_window() {
  const auto& c = model_->config();
  const int64_t B = batch_, D = c.hidden_dim, T = c.extended_window();
  auto& net = model_->model;
  const auto opts = net->embed_in->weight.options();
  layers_.assign(net->blocks.size(), {});
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& L = layers_[i];
    auto& block = net->blocks[i];
    const LayerCache* cache = state_.layers.empty() ? nullptr : &state_.layers[i];
    L.past = cache ? cache->k.size(1) : 0;
    L.keys = torch::empty({B, L.past + T, 2 * D}, opts);
    L.values = torch::empty({B, L.past + T, D}, opts);
    L.outputs = torch::empty({B, T, D}, opts);
    if (block->mega_cache() == MegaCache::kPreviousLayerInput) L.inputs = torch::empty({B, T, D}, opts);
    std::tie(L.alpha, L.q) = block->mega->coefficients();
    if (cache) {
      L.keys.narrow(1, 0, L.past).copy_(block->attn->past_keys(cache->k));
      L.values.narrow(1, 0, L.past).copy_(block->attn->past_values(cache->v));
      L.ema = ema_scan(cache->output, L.alpha, L.q).select(1, cache->output.size(1) - 1);  // [B, D]
    } else {
      L.ema = torch::zeros({B, D}, opts);
    }
  }
  open_ = true;
  rows_ = 0;
  in_window_ = 0;
  // [prefix ; sep0]: the memory handed on (or the initial tokens), then the separator.
  auto& inj = net->memory_injector;
  auto prefix = state_.memory.defined() ? state_.memory
                                        : inj->memory_tokens[0].expand({B, c.num_memory_tokens, D});
  extend(torch::cat({prefix, inj->sep_tokens[0].expand({B, 1, D})}, 1));
}

torch::Tensor Decoder::extend_layer(size_t i, const torch::Tensor& x, int64_t position) {
  auto& L = layers_[i];
  auto& block = model_->model->blocks[i];
  const int64_t n = x.size(1);
  // EMA continued from the last row: y_t = q^(t+1)·y0 + scan(x)_t.
  torch::Tensor y;  // [B, n, D]
  if (n == 1) {     // the same arithmetic in three ops: scan(x)_0 = alpha·x
    y = x * L.alpha + L.ema.unsqueeze(1) * L.q;
  } else {
    auto powers = torch::pow(L.q.unsqueeze(0), torch::arange(1, n + 1, L.q.options()).unsqueeze(1));  // [n, D]
    y = ema_scan(x, L.alpha, L.q) + powers.unsqueeze(0) * L.ema.unsqueeze(1);
  }
  L.ema = y.select(1, n - 1);
  auto m = block->norm_mega(y);
  auto h = block->norm_input(x);
  auto& qkv = block->attn->qkv;
  auto queries = qkv->query(h, position);                          // [B, n, 2D]
  const int64_t seen = L.past + rows_;                             // keys before these rows
  L.keys.narrow(1, seen, n).copy_(qkv->key(h, position));
  L.values.narrow(1, seen, n).copy_(qkv->value(m));
  // [n, seen + n]; one row sees every key so far
  auto mask = n == 1 ? torch::Tensor() : causal_mask(n, seen, x.device());
  auto a = block->attn->attend(queries, L.keys.narrow(1, 0, seen + n), L.values.narrow(1, 0, seen + n), mask);
  auto out = block->combine(x, h, m, a);                           // [B, n, D]
  L.outputs.narrow(1, rows_, n).copy_(out);
  if (L.inputs.defined()) L.inputs.narrow(1, rows_, n).copy_(x);
  return out;
}

torch::Tensor Decoder::extend(torch::Tensor x) {
  const int64_t position = state_.seen + rows_;  // the batched forward's rotary positions
  for (size_t i = 0; i < layers_.size(); ++i) x = extend_layer(i, x, position);
  rows_ += x.size(1);
  return x;
}

void Decoder::close_window() {
  const auto& c = model_->config();
  const int64_t B = batch_, D = c.hidden_dim;
  auto& inj = model_->model->memory_injector;
  extend(torch::cat({inj->sep_tokens[1].expand({B, 1, D}), inj->memory_tokens[1].expand({B, c.num_memory_tokens, D})}, 1));
  const int64_t T = rows_;
  std::vector<LayerCache> caches;
  for (auto& L : layers_) {
    auto out = L.outputs.narrow(1, 0, T);
    caches.push_back({L.inputs.defined() ? L.inputs.narrow(1, 0, T) : out, L.keys.narrow(1, L.past, T),
                      L.values.narrow(1, L.past, T)});
  }
  state_.memory = inj->solidify(layers_.back().outputs.narrow(1, 0, T));
  state_.layers = std::move(caches);
  state_.advance(in_window_);
  layers_.clear();
  open_ = false;
  in_window_ = 0;
}

torch::Tensor Decoder::prefill_window(const torch::Tensor& ids) {
  auto& net = model_->model;
  auto hidden = net->window(net->embed_in(ids), state_);            // [B, W, D]
  return model_->head(hidden.select(1, hidden.size(1) - 1));         // [B, V]
}

torch::Tensor Decoder::feed(const torch::Tensor& ids_in) {
  c10::InferenceMode inference;  // no autograd bookkeeping at all: cheaper than NoGradGuard per op
  TORCH_CHECK(ids_in.dim() == 2 && ids_in.size(0) == batch_ && ids_in.size(1) > 0, "Decoder::feed: ids must be [B, n>0]");
  const int64_t W = model_->config().window_size;
  const auto ids = ids_in.to(model_->embed_out->weight.device());
  torch::Tensor logits;
  int64_t p = 0;
  const int64_t n = ids.size(1);
  while (p < n) {
    if (!open_ && n - p >= W) {  // a whole window: the batched forward
      logits = prefill_window(ids.narrow(1, p, W));
      p += W;
      continue;
    }
    if (!open_) open_window();
    const int64_t take = std::min(W - in_window_, n - p);
    auto hidden = extend(model_->model->embed_in(ids.narrow(1, p, take)));  // [B, take, D]
    logits = model_->head(hidden.select(1, take - 1));
    in_window_ += take;
    p += take;
    if (in_window_ == W) close_window();
  }
  return logits;
}

}  // namespace bakallm
