// Attention of a few query rows (decoding: one row per stream) in one pass
// per row, with no product calls and no [Tq, Tk] tensor:
//   s_j = q·K_jᵀ · scale over the keys the row may see (a contiguous range:
//         the mask of ops/block_attention.h), p = softmax(s), out = Σ p_j V_j.
// The keys are split between the threads (each a partial max, sum and
// Σ p_j V_j, merged at the end, as flash-decoding does), so K and V are read
// once, at the machine's bandwidth. Inference only (no autograd, no dropout),
// CPU, float32 arithmetic (AVX-512 or AVX2 loops, ops/simd.h) over float32 or
// bfloat16 keys and values (the decoder's cache, BakaNet::set_cache_dtype);
// the model takes it where choose_attention_kernel says
// (ops/attention_kernel.h).
#pragma once
#include <torch/torch.h>

#include "ops/block_attention.h"

namespace bakallm {

// q [G, Tq, F] float32; K [G, Tk, F], V [G, Tk, Dv] both float32 or both
// bfloat16, with unit stride along features (other strides free: the
// decoder's reserved buffers) -> [G, Tq, Dv] float32. Every row must see at least one key.
torch::Tensor row_attention(const torch::Tensor& q, const torch::Tensor& K, const torch::Tensor& V,
                            const AttentionMask& mask, double scale);

}  // namespace bakallm
