// The plain transformer BakaLLM is compared with: GPT-NeoX as Pythia uses it,
// op by op as Hugging Face's modeling_gpt_neox.py, under its parameter names
// (docs/GPT_NEOX.md). H heads of hs = D/H features; r = int(hs · rotary_pct).
//
//   GptNeoxNet (`gpt_neox.`):
//     x = embed_in(ids)  (hidden_dropout in training)            [B, T, D]
//     every window of W tokens alone (no state crosses a window):
//       for layer i: x = layers[i](x)
//   then BakaLM's head: embed_out( final_layer_norm(x) )  (its `lm_norm`)
//   Layer:
//     a = attention(input_layernorm(x))
//     parallel:   x = x + a + mlp(post_attention_layernorm(x))
//     sequential: x = x + a;  x = x + mlp(post_attention_layernorm(x))
//     (hidden_dropout on a and on the mlp's output in training)
//   Attention:
//     qkv = query_key_value(h)  viewed [B, T, H, 3, hs] -> q, k, v [B, H, T, hs]
//     q, k: the first r features rotate (rotate_half: pairs (j, j + r/2)),
//           angle(pos, j) = pos · base^(-2j/r)
//     p = softmax(q kᵀ / sqrt(hs), causal) (attention_dropout in training)
//     dense( p v merged back to [B, T, D] )
//   Mlp: dense_4h_to_h( act(dense_h_to_4h(h)) ),  act = hidden_act (gelu)
#pragma once
#include <torch/torch.h>

#include "model/config.h"
#include "model/embedding.h"
#include "model/layer_norm.h"
#include "model/linear.h"

namespace bakallm {

class GptNeoxAttentionImpl : public torch::nn::Module {
 public:
  explicit GptNeoxAttentionImpl(const Config& c);
  torch::Tensor forward(const torch::Tensor& h);  // [B, T, D] -> [B, T, D]
  void set_compute_dtype(torch::ScalarType dtype) { compute_ = dtype; }

  Linear query_key_value;  // D -> 3D, bias
  Linear dense;            // D -> D, bias

 private:
  torch::Tensor rotate(const torch::Tensor& x) const;  // [B, H, T, hs]
  int64_t heads_, head_size_, rotary_;
  double base_, dropout_;
  torch::ScalarType compute_ = torch::kFloat;
};
TORCH_MODULE(GptNeoxAttention);

class GptNeoxMlpImpl : public torch::nn::Module {
 public:
  explicit GptNeoxMlpImpl(const Config& c);
  torch::Tensor forward(const torch::Tensor& h);  // [B, T, D] -> [B, T, D]

  Linear dense_h_to_4h, dense_4h_to_h;  // D -> I -> D, biases

 private:
  Activation activation_;
};
TORCH_MODULE(GptNeoxMlp);

class GptNeoxLayerImpl : public torch::nn::Module {
 public:
  explicit GptNeoxLayerImpl(const Config& c);
  torch::Tensor forward(const torch::Tensor& x);  // [B, T, D] -> [B, T, D]

  LayerNorm input_layernorm, post_attention_layernorm;
  GptNeoxAttention attention;
  GptNeoxMlp mlp;

 private:
  bool parallel_;
  double dropout_;
};
TORCH_MODULE(GptNeoxLayer);

class GptNeoxNetImpl : public torch::nn::Module {
 public:
  explicit GptNeoxNetImpl(const Config& c);
  // ids [B, T] int64 -> the last layer's rows [B, T, D] (final_layer_norm
  // is the head's norm); each window of W tokens is read alone, so training
  // rows, evaluation windows and the decoder see the same context.
  torch::Tensor forward(const torch::Tensor& ids);

  Embedding embed_in;
  torch::nn::ModuleList layers;  // of GptNeoxLayer
  LayerNorm final_layer_norm;

 private:
  int64_t window_;
  double dropout_;
};
TORCH_MODULE(GptNeoxNet);

}  // namespace bakallm
