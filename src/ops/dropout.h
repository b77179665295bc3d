// Inverted dropout whose keep/drop decision is a pure function of a seed and
// the element's index (a counter-based hash, as Philox-style GPU dropout
// does): the backward regenerates the mask instead of storing it, and the CPU
// kernel makes 4 decisions per 64-bit hash, vectorisable and parallel, where
// libtorch 1.13's bernoulli_ draws one generator value per element (measured:
// 266 ms of a 5.6 s tiny training step). The seed comes from libtorch's
// default generator, so checkpointed RNG state still makes resumes exact.
#pragma once
#include <torch/torch.h>

namespace bakallm {

// x with each element zeroed with probability P and the rest scaled by 1/(1-P),
// when TRAINING and P > 0; x itself otherwise. CPU float32 runs the hashed
// kernel; other devices and dtypes use torch::dropout.
torch::Tensor hashed_dropout(const torch::Tensor& x, double p, bool training);

// Data parallelism: this process holds the rows of the global batch from
// FIRST_ROW on, so element i of its row r takes the decision of global row
// FIRST_ROW + r, and N ranks drop exactly what one process with every row
// drops (dim 0 of each dropped tensor is the batch). 0: one process.
void set_dropout_first_row(int64_t first_row);

// Blockwise attention (ops/block_attention.h) drops elements of a weight matrix
// it never stores: a seed drawn once per call as hashed_dropout draws it, and
// the multipliers (0 or 1/(1-P)) of the block rows [I0, I0+ROWS) x columns
// [J0, J0+COLS) of every one of G matrices [TQ, TK], which hashed_dropout of the
// whole [G, TQ, TK] tensor would use (data parallel offset included: dim 0 of
// that tensor is the batch, of BATCH rows).                      -> [G, ROWS, COLS]
uint64_t draw_dropout_seed();
torch::Tensor dropout_scales(uint64_t seed, double p, int64_t batch, int64_t G, int64_t Tq, int64_t Tk, int64_t i0,
                             int64_t rows, int64_t j0, int64_t cols);

// The multipliers (0 or 1/(1-P)) of the N elements of flat indices FIRST,
// FIRST+1, ... under SEED: a row of a fused kernel's dropout (ops/attention_weights.h).
void dropout_multipliers(uint64_t seed, double p, int64_t first, int64_t n, float* out);

// The flat index of this process's first element in a tensor whose dim 0 is
// the batch, PER_ROW elements a batch row (data parallel; 0 in one process).
int64_t dropout_first_element(int64_t per_row);

// The mask kernel's decision for element I under SEED (exposed for tests):
// whether it is kept at drop probability P.
bool dropout_keeps(uint64_t seed, int64_t i, double p);

}  // namespace bakallm
