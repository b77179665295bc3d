// BakaLLM, top to bottom.
//
//   BakaNet (`model.`):
//     x = embed_in(ids)                                         [B, T, D]
//     for each window of W tokens starting at p:
//       open the window: per layer the gated cache_i and its EMA value
//       s = memory_injector.inject(x[:, p:p+W], memory)         [B, W+2M+2, D]
//       for layer i: s = layers[i](s, window_i, seen + p)
//       memory = memory_injector.next_memory(s)  (the solidifier) [B, M, D]
//       cache_i = this window's rows of layer i
//       out_c  = s[:, M+1 : M+1+W]
//       training and every detach_every-th window: detach memory and caches
//     (the decoder opens the same window and reads its rows a few at a time)
//     h = concat(out_c)                                         [B, T, D]
//   BakaLM:
//     logits = embed_out( lm_norm(h) )                          [B, T, V]
//
// BakaLM also holds the GPT-NeoX baseline (model_type "gpt_neox",
// model/gpt_neox.h): then `gpt_neox` replaces `model`, its final_layer_norm
// is `lm_norm`, and the state stays empty. Training, evaluation and decoding
// reach either network through trunk() and head().
#pragma once
#include <optional>

#include <torch/torch.h>

#include "model/block.h"
#include "model/config.h"
#include "model/gpt_neox.h"
#include "model/linear.h"
#include "model/memory_injector.h"
#include "model/state.h"
#include "model/targets.h"

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
  // the solidifier, read in one piece: open_window, extend by
  // memory_injector.inject(x), close_window.                       -> [B, n, D]
  torch::Tensor window(const torch::Tensor& x, State& state);

  // The steps of a window, for a reader that takes its rows a few at a time.
  // Opens the next window of STATE for B rows (RESERVE > 0: room for that many
  // rows is preallocated, as the decoder wants).
  OpenWindow open_window(const State& state, int64_t batch, int64_t reserve = 0);
  // Rows [B, n, D] of the open window through every layer.       -> [B, n, D]
  torch::Tensor extend(OpenWindow& w, torch::Tensor rows);
  // The same for several open windows read together (the server's streams):
  // ROWS stacks their B_j rows each, and every product runs once for all;
  // each row attends to its own window alone.                   -> [sum B_j, n, D]
  torch::Tensor extend(const std::vector<OpenWindow*>& ws, torch::Tensor rows);
  // After the window's last row: the next memory (solidifier), the caches,
  // TOKENS text tokens seen; in training, detach every detach_every windows.
  void close_window(OpenWindow& w, State& state, int64_t tokens);

  BlockImpl& layer(size_t i) { return layers->at<BlockImpl>(i); }

  // The dtype of the keys and values a window opened with RESERVE > 0 (the
  // decoder's) keeps: bfloat16 halves what each decoded token reads (the
  // attention's arithmetic stays float32, ops/row_attention.h) and rounds
  // every cached key and value to 8 mantissa bits; the cache handed to the
  // next window is widened back. Unset: the model's dtype, exact.
  void set_cache_dtype(std::optional<torch::ScalarType> dtype) { cache_dtype_ = dtype; }

  Embedding embed_in;
  torch::nn::ModuleList layers;  // of Block
  MemoryInjector memory_injector;

 private:
  Config config_;
  std::optional<torch::ScalarType> cache_dtype_;
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

  // The network below the head: BakaNet, or GPT-NeoX (whose state stays empty).
  NetOutput trunk(const torch::Tensor& ids, State state = {}, const torch::Tensor& resets = {});

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

  BakaNet model;                      // BakaLLM, else null
  GptNeoxNet gpt_neox{nullptr};       // GPT-NeoX, else null
  LayerNorm lm_norm;       // GPT-NeoX: gpt_neox->final_layer_norm
  Linear embed_out;  // weight [V, D]

  // FLOAT or BFLOAT16 for every matrix product (mixed precision: parameters,
  // norms, EMA and softmax stay float32).
  void set_compute_dtype(torch::ScalarType dtype);

  // Stores every Linear weight (the head's included) in DTYPE and runs those
  // products in it: with BFLOAT16 a decoded token reads half the bytes.
  // Activations, norms, EMA and attention stay float32. For inference only:
  // the float32 values are gone from this model.
  // torch::kChar stores them in 8 bits, Q8_0 (ops/q8.h): a quarter of the
  // bytes; a Linear whose input width is not a multiple of 32 stays float32.
  // Either way (float32 too) the stored weights move into one region of huge
  // pages (util/huge_pages.h), which a decoded token streams faster.
  // Beside bfloat16 or int8 weights the decoder keeps its keys and values in
  // bfloat16 too (BakaNet::set_cache_dtype): half the bytes its attention
  // reads. Float32 weights keep them in the model's dtype: decoding stays exact.
  void store_linear_weights(torch::ScalarType dtype);

 private:
  Config config_;
  torch::ScalarType compute_ = torch::kFloat;
};
TORCH_MODULE(BakaLM);

// --weights of generate, eval, serve and bench: "float32" (as trained),
// "bfloat16" or "int8" (Q8_0), applied to MODEL's Linear weights.
void use_weights(BakaLM& model, const std::string& format);

// Mean cross-entropy of logits[:, :-1] against ids[:, 1:].   logits [B, T, V], ids [B, T]
torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& ids);

// The prototype's initial values for every parameter (GPT-NeoX: Hugging
// Face's, normal(0, 0.02) weights and zero biases), drawn from torch's global
// generator after seeding it with SEED.
BakaLM make_model(const Config& config, uint64_t seed);

}  // namespace bakallm
