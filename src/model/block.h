// BakaBlock (`model.layers.i.`):
//   m   = norm_mega( mega(x, cache.output) )
//   h   = norm_input(x)
//   a   = attn(qk_in = h, v_in = m, cache.k, cache.v, offset)
//   mlp = mlp(h) ⊙ sigmoid( mlp_attn_gate( mlp_attn_norm(a) ) )
//   g   = m ⊙ sigmoid( mega_gate(m) )          (mega_gate has a bias)
//   out = x + a + mlp + g
#pragma once
#include <torch/torch.h>

#include "model/attention.h"
#include "model/config.h"
#include "model/linear.h"
#include "model/mega.h"
#include "model/mlp.h"
#include "model/state.h"

namespace bakallm {

struct BlockOutput {
  torch::Tensor out;  // [B, T, D]
  LayerCache cache;   // this window, for the next one
};

class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(const Config& config);

  // One extended window x [B, T, D], causal, after the previous window's cache.
  BlockOutput forward(const torch::Tensor& x, const LayerCache* cache, const WindowOffsets& offsets);

  // The memory solidifier's pass: no cache, not causal; attention and MLP for
  // the last n rows only, whose output [B, n, D] is returned.
  torch::Tensor solidify(const torch::Tensor& x, int64_t n);

  // x + a + mlp(h) ⊙ sigmoid(mlp_attn_gate(mlp_attn_norm(a))) + m ⊙ sigmoid(mega_gate(m))
  torch::Tensor combine(const torch::Tensor& x, const torch::Tensor& h, const torch::Tensor& m,
                        const torch::Tensor& a);
  MegaCache mega_cache() const { return mega_cache_; }

  Mega mega;
  torch::nn::LayerNorm norm_mega, norm_input, mlp_attn_norm;
  Attention attn;
  Mlp mlp;
  Linear mlp_attn_gate, mega_gate;

 private:
  MegaCache mega_cache_;
};
TORCH_MODULE(Block);

}  // namespace bakallm
