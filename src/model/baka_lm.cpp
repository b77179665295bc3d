#include "model/baka_lm.h"

#include "model/head_loss.h"

namespace bakallm {

BakaNetImpl::BakaNetImpl(const Config& c)
    : embed_in(register_module("embed_in", torch::nn::Embedding(c.vocab_size, c.hidden_dim))),
      layers(register_module("layers", torch::nn::ModuleList())),
      memory_injector(register_module("memory_injector", MemoryInjector(c))),
      config_(c) {
  for (int64_t i = 0; i < c.num_layers; ++i) {
    blocks.emplace_back(c);
    layers->push_back(blocks.back());
  }
}

torch::Tensor BakaNetImpl::window(const torch::Tensor& x, State& state) {
  const bool first = state.layers.empty();
  if (first) state.layers.resize(blocks.size());
  const auto offsets = state.offsets();
  auto memory = state.memory;
  if (memory.defined() && state.fresh_rows.defined())  // restarted rows take the initial memory
    memory = torch::where(state.fresh_rows.view({-1, 1, 1}),
                          memory_injector->memory_tokens[0].unsqueeze(0).to(memory.scalar_type()), memory);
  auto s = memory_injector->inject(x, memory);        // [B, n+2M+2, D]
  for (size_t i = 0; i < blocks.size(); ++i) {
    auto r = blocks[i]->forward(s, first ? nullptr : &state.layers[i], offsets);
    s = r.out;
    state.layers[i] = r.cache;
  }
  state.memory = memory_injector->solidify(s);        // [B, M, D]
  state.advance(x.size(1));
  if (is_training() && state.windows % config_.detach_every == 0) state.detach_();
  return memory_injector->text_rows(s);               // [B, n, D]
}

NetOutput BakaNetImpl::forward(const torch::Tensor& ids, State state, const torch::Tensor& resets) {
  TORCH_CHECK(ids.dim() == 2, "BakaNet: ids must be [B, T], got ", ids.sizes());
  auto x = embed_in(ids);  // [B, T, D]
  const int64_t T = ids.size(1), W = config_.window_size;
  std::vector<torch::Tensor> outs;
  for (int64_t p = 0, c = 0; p < T; p += W, ++c) {
    if (resets.defined()) state.reset_rows(resets.select(1, c));
    outs.push_back(window(x.narrow(1, p, std::min(W, T - p)), state));
  }
  auto hidden = outs.empty() ? x : torch::cat(outs, 1);  // [B, T, D]
  return {hidden, std::move(state)};
}

BakaLMImpl::BakaLMImpl(const Config& c)
    : model(register_module("model", BakaNet(c))),
      lm_norm(register_module("lm_norm",
                              torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_dim}).eps(1e-5)))),
      embed_out(register_module("embed_out", Linear(c.hidden_dim, c.vocab_size))),
      config_(c) {}

BakaLMImpl::LossOutput BakaLMImpl::forward_loss(const torch::Tensor& ids, const torch::Tensor& targets,
                                                State state, const torch::Tensor& resets) {
  auto net = model(ids, std::move(state), resets);
  auto h = lm_norm(net.hidden).reshape({-1, config_.hidden_dim});  // [B·T, D]
  auto loss = fused_head_loss(h, embed_out->weight, targets.reshape({-1}), compute_);
  return {loss, std::move(net.state)};
}

torch::Tensor shifted_targets(const torch::Tensor& ids) {
  auto targets = torch::full_like(ids, kIgnoreIndex);
  const int64_t T = ids.size(1);
  if (T > 1) targets.narrow(1, 0, T - 1).copy_(ids.narrow(1, 1, T - 1));
  return targets;
}

void BakaLMImpl::set_compute_dtype(torch::ScalarType dtype) {
  compute_ = dtype;
  for (const auto& m : modules()) {
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(m)) linear->set_compute_dtype(dtype);
    if (auto attention = std::dynamic_pointer_cast<AttentionImpl>(m)) attention->set_compute_dtype(dtype);
  }
}

void BakaLMImpl::store_linear_weights(torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  for (const auto& m : modules()) {
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(m)) {
      linear->weight.set_data(linear->weight.to(dtype));
      linear->set_compute_dtype(dtype);
    }
  }
}

LMOutput BakaLMImpl::forward(const torch::Tensor& ids, State state) {
  auto net = model(ids, std::move(state));
  return {head(net.hidden), std::move(net.state)};
}

torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& ids) {
  const int64_t T = ids.size(1), V = logits.size(2);
  auto pred = logits.narrow(1, 0, T - 1).reshape({-1, V}).to(torch::kFloat);  // [B·(T-1), V]
  auto target = ids.narrow(1, 1, T - 1).reshape({-1});                       // [B·(T-1)]
  return torch::nn::functional::cross_entropy(pred, target);
}

BakaLM make_model(const Config& config, uint64_t seed) {
  torch::manual_seed(seed);
  return BakaLM(config);
}

}  // namespace bakallm
