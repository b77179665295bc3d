// BakaLLM, top to bottom.
//
//   BakaNet (`model.`):
//     x = embed_in(ids)                                         [B, T, D]
//     for each window of W tokens starting at p:
//       s = memory_injector.inject(x[:, p:p+W], memory)         [B, W+2M+2, D]
//       for layer i: s, cache_i = layers[i](s, cache_i, seen + p)
//       memory = memory_injector.solidify(s)                    [B, M, D]
//       out_c  = s[:, M+1 : M+1+W]
//       training and every detach_every-th window: detach memory and caches
//     h = concat(out_c)                                         [B, T, D]
//   BakaLM:
//     logits = embed_out( lm_norm(h) )                          [B, T, V]
#pragma once
#include <torch/torch.h>

#include "model/block.h"
#include "model/config.h"
#include "model/head_loss.h"
#include "model/linear.h"
#include "model/memory_injector.h"
#include "model/state.h"

namespace bakallm {

struct NetOutput {
  torch::Tensor hidden;  // [B, T, D]
  State state;           // after the last token
};

class BakaNetImpl : public torch::nn::Module {
 public:
  explicit BakaNetImpl(const Config& config);

  // ids: [B, T] int64. STATE from an earlier call of the same stream, or {}.
  // RESETS [B, windows of this call] bool: row b starts a new document at window c.
  NetOutput forward(const torch::Tensor& ids, State state = {}, const torch::Tensor& resets = {});

  // One window of embedded tokens x [B, n, D] (n <= W) through every layer and
  // the solidifier; updates state (memory, caches, seen, windows).  -> [B, n, D]
  torch::Tensor window(const torch::Tensor& x, State& state);

  torch::nn::Embedding embed_in;
  torch::nn::ModuleList layers;
  MemoryInjector memory_injector;
  std::vector<Block> blocks;  // the same modules as `layers`, typed

 private:
  Config config_;
};
TORCH_MODULE(BakaNet);

struct LMOutput {
  torch::Tensor logits;  // [B, T, V]
  State state;
};

class BakaLMImpl : public torch::nn::Module {
 public:
  explicit BakaLMImpl(const Config& config);

  LMOutput forward(const torch::Tensor& ids, State state = {});

  // Mean cross-entropy of the next-token predictions against TARGETS [B, T]
  // (kIgnoreIndex skips a position), with the head fused into the loss so the
  // [B, T, V] logits are never stored (training and evaluation).
  struct LossOutput {
    torch::Tensor loss;  // scalar
    State state;
  };
  LossOutput forward_loss(const torch::Tensor& ids, const torch::Tensor& targets, State state = {},
                          const torch::Tensor& resets = {});
  torch::Tensor head(const torch::Tensor& hidden) { return embed_out(lm_norm(hidden)); }

  const Config& config() const { return config_; }

  BakaNet model;
  torch::nn::LayerNorm lm_norm;
  Linear embed_out;  // weight [V, D]

  // FLOAT or BFLOAT16 for every matrix product (mixed precision: parameters,
  // norms, EMA and softmax stay float32).
  void set_compute_dtype(torch::ScalarType dtype);

  // Stores every Linear weight (the head's included) in DTYPE and runs those
  // products in it: with BFLOAT16 a decoded token reads half the bytes.
  // Activations, norms, EMA and attention stay float32. For inference only:
  // the float32 values are gone from this model.
  void store_linear_weights(torch::ScalarType dtype);

 private:
  Config config_;
  torch::ScalarType compute_ = torch::kFloat;
};
TORCH_MODULE(BakaLM);

// TARGETS for next-token prediction on IDS [B, T]: ids shifted left, the last
// position ignored.                                                    -> [B, T]
torch::Tensor shifted_targets(const torch::Tensor& ids);

// Mean cross-entropy of logits[:, :-1] against ids[:, 1:].   logits [B, T, V], ids [B, T]
torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& ids);

// The prototype's initial values for every parameter, drawn from torch's
// global generator (seed it with torch::manual_seed first).
BakaLM make_model(const Config& config, uint64_t seed);

}  // namespace bakallm
