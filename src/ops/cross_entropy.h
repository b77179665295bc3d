// Cross-entropy, once: per row over given logits (evaluation, tests), and
// fused with the LM head for training.
//
// The LM head and cross-entropy fused, chunk by chunk over rows, so that the
// [N, V] logits (and their softmax and gradient: 0.5 GB each for 4k tokens
// of a 32k vocabulary) never exist at once. When autograd will want
// gradients, the forward also makes dh and dW for each chunk while its
// logits are at hand (kept: [N, D] + [V, D]); the backward only scales them.
#pragma once
#include <torch/torch.h>

#include "model/targets.h"

namespace bakallm {

// −log softmax(logits)[target] per row, in float32 (double stays double); 0 where the target is
// kIgnoreIndex. logits [N, V], targets [N] int64.                      -> [N]
torch::Tensor cross_entropy_rows(const torch::Tensor& logits, const torch::Tensor& targets);

// Per row of X [n, V] float32 (contiguous, CPU): its max m, then
// x := exp(x − m) in place, and the sum of those. One pass for the max and one
// for exp and sum while the row is in cache (ops/exp_row.h's vector loop
// where the CPU has AVX-512); elsewhere the tensor ops max, sub_, exp_, sum.
// -> {m [n, 1], sum [n, 1]}
std::pair<torch::Tensor, torch::Tensor> exp_rows_(torch::Tensor& x);

// d(loss)/d(logits) of rows of logits X [n, V] (float32): exp_rows_'s
// max m and sum, and with w [n, 1] each row's weight in the loss (its share
// of the mean, 0 for ignored rows) and INDEX [n, 1] its target,
//   g = softmax(x) · w − w · onehot(index)
// in DTYPE (the products' dtype), each value computed in float32 and rounded
// once. On CPUs with AVX-512 one pass over X from memory, each row's max,
// exponentials and gradient while it is in cache (two passes had been);
// elsewhere exp_rows_ and the tensor ops mul_, scatter_add_ and to. X is
// overwritten: float32, by g itself; bfloat16, by its exponentials.
// -> {m [n, 1], sum [n, 1], g [n, V]}
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> softmax_gradient_(torch::Tensor& x, const torch::Tensor& w,
                                                                          const torch::Tensor& index,
                                                                          torch::ScalarType dtype);

// Mean of −log softmax(h Wᵀ)[target] over rows whose target != kIgnoreIndex
// (0 when there are none). h: [N, D] (already lm_norm'ed), W: [V, D],
// targets: [N] int64. Products run in COMPUTE (float32 or bfloat16), with
// W_COMPUTE as W in COMPUTE when given (a kept cast, ops/cast_cache.h), else
// W cast once per call. Logits are made kHeadChunkRows rows at a time.
constexpr int64_t kHeadChunkRows = 1024;
torch::Tensor fused_head_loss(const torch::Tensor& h, const torch::Tensor& W, const torch::Tensor& targets,
                              torch::ScalarType compute = torch::kFloat, int64_t rows_per_chunk = kHeadChunkRows,
                              const torch::Tensor& W_compute = {});

}  // namespace bakallm
