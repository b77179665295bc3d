// Few-row products y = a · Wᵀ on the CPU (decoding: one row per stream),
// with the weight W [N, K] stored as float32, bfloat16 or Q8_0 (ops/q8.h) and
// read in place, once for all rows: columns outermost, two or four read side
// by side, each from its own stream of weight rows (row_product_loops.inc),
// so a tile's weight rows stay in L1 while every activation row uses them.
// Accumulation is float32. One source for AVX-512, AVX2 and portable C++
// (ops/simd.h); the best the CPU runs is chosen at run time.
//
// Why not oneDNN for these: a product of one row is a few microseconds of
// memory traffic, and each oneDNN call (plus the bfloat16 conversion of the
// row before it) costs about as much again; a decoded token runs ~70 of them.
#pragma once
#include <cstdint>

#include "ops/cpu.h"

namespace bakallm {

enum class RowWeights { kFloat, kBFloat16, kQ8 };

// Columns are split between threads; every row block read from A [M, K]
// float32 (row-major), K a multiple of 32. W: float [N, K], uint16 bfloat16
// bits [N, K], or int8 [N, K] with SCALES [N, K/32] (kQ8; null otherwise).
// Y: [M, N] float32. With bfloat16 weights the rows of A are rounded to
// bfloat16 first: the product of two bfloat16 operands, as oneDNN's.
// ISA: the instruction set's loops to run (tests run each the CPU has).
void row_product(const float* a, int64_t M, int64_t K, const void* w, const float* scales, RowWeights kind,
                 float* y, int64_t N, Isa isa = kernel_isa());

}  // namespace bakallm
