// The dense attention's weights from its raw scores, one pass a row each way:
//   P = softmax(S · scale, hidden keys at -inf);  W = drop(P)
// with the hashed dropout of ops/dropout.h (the elements and seed draw
// hashed_dropout of W's tensor would use). The backward, from the saved P:
//   dP = drop(dW);  dS = scale · P ⊙ (dP − rowsum(P ⊙ dP))
// (hidden keys have P = 0, so their dS is 0). It replaces five libtorch ops
// and their temporaries (the product by the scale, masked_fill and the
// bool mask it reads, softmax, dropout): ten ops over [G, Tq, Tk] in a
// training step, counting the backwards and masked_fill's copies, become
// one row kernel each way.
// Both the BakaLLM attention's short windows and GPT-NeoX take it.
#pragma once
#include <torch/torch.h>

#include "ops/block_attention.h"

namespace bakallm {

// S [G, Tq, Tk] -> W [G, Tq, Tk]. MASK hides keys as visible_keys says.
// Contiguous float32 or bfloat16 on the CPU runs the row kernels (ops/simd.h's
// sets: kernel_isa() chooses), in float32 arithmetic, W and the gradient in
// S's dtype (bfloat16 training: the scores' product writes bfloat16 and the
// weights' product reads it, with no cast between; the saved P is the
// bfloat16 P the forward used); other devices and dtypes the libtorch ops
// (at least float32 for the softmax; double stays double).
torch::Tensor attention_weights(const torch::Tensor& scores, const AttentionMask& mask,
                                const AttentionWeightsOptions& options);

// The dense attention, W · V with W = attention_weights(q · Kᵀ), both
// products in COMPUTE (ops/matmul.h). q [..., Tq, F], K [..., Tk, F], V [...,
// Tk, Dv] with the same leading dims (their product: the weights' G)
// -> [..., Tq, Dv] in q's dtype. With bfloat16 products the scores, W and
// their gradients are bfloat16 (inner_dtype): no cast between the products
// and the weights' kernel, half the bytes, and products that write bfloat16
// run nearer the peak on AMX (BENCHMARKS.md, session 32).
torch::Tensor dense_attention(const torch::Tensor& q, const torch::Tensor& K, const torch::Tensor& V,
                              const AttentionMask& mask, const AttentionWeightsOptions& options,
                              torch::ScalarType compute);

}  // namespace bakallm
