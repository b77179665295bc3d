#include "model/baka_lm.h"

#include <algorithm>

#include "model/layer_norm.h"
#include "model/shared_input.h"
#include "ops/cross_entropy.h"
#include "util/error.h"
#include "util/huge_pages.h"
#include "util/strings.h"

namespace bakallm {

BakaNetImpl::BakaNetImpl(const Config& c)
    : embed_in(register_module("embed_in", Embedding(c.vocab_size, c.hidden_dim))),
      layers(register_module("layers", torch::nn::ModuleList())),
      memory_injector(register_module("memory_injector", MemoryInjector(c))),
      config_(c) {
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(Block(c));
}

OpenWindow BakaNetImpl::open_window(const State& state, int64_t B, int64_t reserve) {
  OpenWindow w;
  w.offsets = state.offsets();
  w.batch = B;
  const auto options = embed_in->weight.options();
  const auto kv_dtype = cache_dtype_.value_or(embed_in->weight.scalar_type());
  for (size_t i = 0; i < layers->size(); ++i)
    w.layers.push_back(layer(i).open(state.layers.empty() ? nullptr : &state.layers[i], w.offsets.keep_past, B,
                                     options, reserve, kv_dtype));
  if (reserve > 0) w.top.reserve({B, reserve, config_.hidden_dim}, options);
  return w;
}

torch::Tensor BakaNetImpl::extend(OpenWindow& w, torch::Tensor rows) { return extend(std::vector<OpenWindow*>{&w}, rows); }

torch::Tensor BakaNetImpl::extend(const std::vector<OpenWindow*>& ws, torch::Tensor rows) {
  if (rows.size(1) == 0) return rows;  // e.g. the head of a window with no memory and no separator
  const auto at = OpenWindow::next_offsets(ws, rows.device());  // the rows' rotary positions
  for (size_t i = 0; i < layers->size(); ++i) {
    LayerWindows layer_windows;
    for (auto* w : ws) layer_windows.push_back(&w->layers[i]);
    rows = layer(i).forward(rows, layer_windows, at);
  }
  const auto top = split_rows(rows, ws);
  for (size_t j = 0; j < ws.size(); ++j) ws[j]->top.append(top[j]);
  return rows;
}

void BakaNetImpl::close_window(OpenWindow& w, State& state, int64_t tokens) {
  state.layers.clear();
  if (config_.xl_cache)  // without it no layer sees the previous window: no cache is kept
    for (const auto& l : w.layers) state.layers.push_back(l.cache());
  state.memory = memory_injector->next_memory(w.top.rows());  // [B, M, D]
  state.advance(tokens);
  if (is_training() && config_.detach_every > 0 && state.windows % config_.detach_every == 0) state.detach_();
}

torch::Tensor BakaNetImpl::window(const torch::Tensor& x, State& state) {
  auto w = open_window(state, x.size(0));
  auto s = extend(w, memory_injector->inject(x, memory_injector->prefix(state, x.size(0))));  // [B, n+2M+2, D]
  close_window(w, state, x.size(1));
  return memory_injector->text_rows(s);  // [B, n, D]
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

namespace {
// Hugging Face's GPTNeoXPreTrainedModel._init_weights: normal(0, 0.02) for
// every matrix and embedding, zero biases (LayerNorms stay ones and zeros).
void init_like_hugging_face(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.named_parameters()) {
    const auto& name = p.key();
    const bool norm = name.find("layernorm") != std::string::npos || name.find("layer_norm") != std::string::npos;
    if (norm) continue;
    if (ends_with(name, ".bias")) p.value().zero_();
    else p.value().normal_(0.0, 0.02);
  }
}
}  // namespace

BakaLMImpl::BakaLMImpl(const Config& c)
    : model(c.is_gpt_neox() ? BakaNet(nullptr) : register_module("model", BakaNet(c))),
      lm_norm(nullptr),
      embed_out(nullptr),
      config_(c) {
  if (c.is_gpt_neox()) {
    gpt_neox = register_module("gpt_neox", GptNeoxNet(c));
    lm_norm = gpt_neox->final_layer_norm;
  } else {
    lm_norm = register_module("lm_norm", layer_norm(c.hidden_dim));
  }
  embed_out = register_module("embed_out", Linear(c.hidden_dim, c.vocab_size));
  if (c.is_gpt_neox()) init_like_hugging_face(*this);
}

NetOutput BakaLMImpl::trunk(const torch::Tensor& ids, State state, const torch::Tensor& resets) {
  if (gpt_neox) return {gpt_neox(ids), std::move(state)};
  return model(ids, std::move(state), resets);
}

BakaLMImpl::LossOutput BakaLMImpl::forward_loss(const torch::Tensor& ids, const torch::Tensor& targets,
                                                State state, const torch::Tensor& resets) {
  auto net = trunk(ids, std::move(state), resets);
  auto h = lm_norm(net.hidden).reshape({-1, config_.hidden_dim});  // [B·T, D]
  auto loss = fused_head_loss(h, embed_out->weight, targets.reshape({-1}), compute_, kHeadChunkRows,
                              embed_out->compute_weight());
  return {loss, std::move(net.state)};
}

void BakaLMImpl::set_compute_dtype(torch::ScalarType dtype) {
  compute_ = dtype;
  for (const auto& m : modules()) {
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(m)) linear->set_compute_dtype(dtype);
    if (auto attention = std::dynamic_pointer_cast<AttentionImpl>(m)) attention->set_compute_dtype(dtype);
    if (auto attention = std::dynamic_pointer_cast<GptNeoxAttentionImpl>(m)) attention->set_compute_dtype(dtype);
  }
}

void BakaLMImpl::store_linear_weights(torch::ScalarType dtype) {
  torch::NoGradGuard no_grad;
  std::vector<std::shared_ptr<LinearImpl>> linears;
  for (const auto& m : modules()) {
    if (auto linear = std::dynamic_pointer_cast<LinearImpl>(m)) {
      if (dtype == torch::kChar) {
        linear->store_q8();  // products stay in compute_ (float32 or bf16)
      } else if (dtype != linear->weight.scalar_type()) {
        linear->weight.set_data(linear->weight.to(dtype));
        linear->set_compute_dtype(dtype);
      }
      linears.push_back(linear);
    }
  }
  // Layers reading one input side by side (model/shared_input.h), each group where its first layer is.
  std::vector<torch::Tensor*> stored;
  std::vector<SharedInput*> packed;
  for (const auto& linear : linears) {
    auto* group = linear->shared_input().get();
    if (group && std::find(packed.begin(), packed.end(), group) != packed.end()) continue;
    if (group && group->pack()) {
      packed.push_back(group);
      for (auto* t : group->packed_tensors()) stored.push_back(t);
    } else {
      for (auto* t : linear->stored_weights()) stored.push_back(t);
    }
  }
  move_to_huge_pages(stored);  // a decoded token streams them all
  for (auto* group : packed) group->point();  // the members' views of the moved rows
  if (model) model->set_cache_dtype(dtype == torch::kFloat ? std::nullopt : std::optional(torch::kBFloat16));
}

void use_weights(BakaLM& model, const std::string& format) {
  if (format == "float32") return model->store_linear_weights(torch::kFloat);
  if (format == "bfloat16") return model->store_linear_weights(torch::kBFloat16);
  if (format == "int8") return model->store_linear_weights(torch::kChar);
  throw Error("--weights must be float32, bfloat16 or int8, got '" + format + "'");
}

LMOutput BakaLMImpl::forward(const torch::Tensor& ids, State state) {
  auto net = trunk(ids, std::move(state));
  return {head(net.hidden), std::move(net.state)};
}

torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& ids) {
  const int64_t T = ids.size(1), V = logits.size(2);
  auto pred = logits.narrow(1, 0, T - 1).reshape({-1, V});  // [B·(T-1), V]
  auto target = ids.narrow(1, 1, T - 1).reshape({-1});     // [B·(T-1)]
  return cross_entropy_rows(pred, target).mean();
}

BakaLM make_model(const Config& config, uint64_t seed) {
  torch::manual_seed(seed);
  return BakaLM(config);
}

}  // namespace bakallm
