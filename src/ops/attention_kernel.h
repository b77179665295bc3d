// Which kernel runs the model's attention, chosen in one place:
//   kRows   one pass per decoded row (ops/row_attention.h), inference only;
//   kBlocks online softmax by blocks (ops/block_attention.h);
//   kDense  two products and a softmax over the [Tq, Tk] weights.
// Under kAuto: the rows for at most kRowAttentionRows inference rows on a CPU
// with AVX-512; the blocks on the CPU when G·Tq·Tk weights (several rows
// against many keys) would reach kBlockAttentionFrom floats; the dense
// product otherwise (a short window: fewer, larger ops). BAKALLM_ATTENTION=
// dense, blocks or rows, or set_attention_kernel, fixes the choice (tests,
// benchmarks); rows apply only where no gradient is wanted, and the dense
// product runs elsewhere.
#pragma once
#include <torch/torch.h>

namespace bakallm {

enum class AttentionKernel { kAuto, kDense, kBlocks, kRows };

constexpr int64_t kRowAttentionRows = 4;
constexpr int64_t kBlockAttentionFrom = int64_t{1} << 22;

void set_attention_kernel(AttentionKernel kernel);
AttentionKernel attention_kernel();  // the choice in force (kAuto unless fixed)

// The kernel for G groups (batch x heads) of TQ query rows against TK keys on
// DEVICE; INFERENCE: no gradient wanted and no dropout, in float32. Never kAuto.
AttentionKernel choose_attention_kernel(const torch::Device& device, int64_t G, int64_t Tq, int64_t Tk,
                                        bool inference);

}  // namespace bakallm
