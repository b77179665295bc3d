// Attention by blocks with an online softmax (FlashAttention's algorithm, in
// libtorch products): softmax(q Kᵀ · scale + mask) V with hashed dropout on
// the weights, forward and backward, never holding the [Tq, Tk] score matrix
// (at most one block of BLOCK x BLOCK per matrix), and skipping the blocks the
// causal mask hides entirely. BakaLLM attends with one head of width 2D (640
// for tiny, 1536 for base), past what fused GPU kernels take (256); here the
// width only sets the products' size.
//
// Forward, per query block, over the key blocks it may see:
//   s = q Kⱼᵀ · scale (masked: -inf);  m' = max(m, rowmax s);  p = exp(s - m')
//   l = l·exp(m - m') + rowsum p;  acc = acc·exp(m - m') + drop(p) Vⱼ
//   out = acc / l;  lse = m + log l   (saved: q, K, V, out, lse; not p)
// Backward, per block, p recomputed as exp(s - lse):
//   dV += drop(p)ᵀ dO;  dp = drop(dO Vᵀ);  ds = p ⊙ (dp - rowsum(dO ⊙ out))
//   dq += ds K · scale;  dK += dsᵀ q · scale
// The dropout multipliers are those hashed_dropout gives the whole weight
// matrix (ops/dropout.h: the same seed and element indices), so the result
// equals the dense attention's, dropout included, to rounding.
#pragma once
#include <torch/torch.h>

#include "ops/attention_kernel.h"

namespace bakallm {

// Which keys query row i (0..Tq-1) may see: with CAUSAL, keys 0..before+i;
// matrices g whose KEEP_PAST[g] is false (when defined) never see keys
// 0..past-1. Without CAUSAL every key.
struct AttentionMask {
  bool causal = false;
  int64_t before = 0;
  int64_t past = 0;
  torch::Tensor keep_past;  // [G] bool, or undefined
};

// MASK on the block of query rows [I0, I0+ROWS) x keys [J0, J0+COLS), true
// where a row may attend: [rows, cols], [G, 1|rows, cols] when rows hide the
// past, or undefined when nothing in the block is hidden. The dense attention
// takes it for the whole matrix, the blockwise one block by block.
torch::Tensor visible_keys(const AttentionMask& mask, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                           const torch::Device& device);

// How the weights are made besides the mask: the dense kernel's
// (ops/attention_weights.h) and the blocks' alike.
struct AttentionWeightsOptions {
  double scale = 1.0;
  double dropout = 0.0;  // on the weights, when training
  bool training = false;
  int64_t batch = 1;     // G = batch x heads: the dropout's rows (data parallel)
};

// MASK and OPTIONS kept in an autograd function's saved data from its
// forward for its backward, and read back there.
void save_weighting(const AttentionMask& mask, const AttentionWeightsOptions& options,
                    torch::autograd::AutogradContext* ctx);
std::pair<AttentionMask, AttentionWeightsOptions> saved_weighting(torch::autograd::AutogradContext* ctx);

struct BlockAttentionOptions : AttentionWeightsOptions {
  torch::ScalarType compute = torch::kFloat;  // the products' dtype (kBFloat16: AMX where there is one)
  int64_t block = 128;   // rows and columns of a block
};

// q [G, Tq, F], K [G, Tk, F], V [G, Tk, Dv] float32 -> [G, Tq, Dv]
torch::Tensor block_attention(const torch::Tensor& q, const torch::Tensor& K, const torch::Tensor& V,
                              const AttentionMask& mask, const BlockAttentionOptions& options);

}  // namespace bakallm
