// Weights in 8 bits, as llama.cpp's Q8_0: each row of a weight [N, K] in
// blocks of 32 values, each block an int8 vector and one float32 scale
// (absmax / 127), so w ≈ q · scale with an error of at most scale / 2. A
// decoded token reads a quarter of float32's bytes (1.125 bytes a weight).
//
// matmul_nt_q8 runs few-row products (decoding) in a kernel that reads the
// int8 weights directly (ops/row_product.h: AVX-512, AVX2 or portable C++,
// chosen at run time) and many-row products (prefill, evaluation) by
// dequantizing and calling matmul_nt.
#pragma once
#include <torch/torch.h>

namespace bakallm {

constexpr int64_t kQ8Block = 32;

struct Q8Weight {
  torch::Tensor q;       // [N, K] int8
  torch::Tensor scales;  // [N, K / 32] float32
  bool defined() const { return q.defined(); }
  int64_t bytes() const { return q.numel() * 1 + scales.numel() * 4; }
};

// W [N, K] float (K a multiple of 32) in Q8_0.
Q8Weight quantize_q8(const torch::Tensor& w);
torch::Tensor dequantize_q8(const Q8Weight& w, torch::ScalarType dtype = torch::kFloat);  // [N, K]

// a [..., M, K] float32 times Wᵀ -> [..., M, N] float32 (no autograd: inference).
torch::Tensor matmul_nt_q8(const torch::Tensor& a, const Q8Weight& w, torch::ScalarType compute = torch::kFloat);

}  // namespace bakallm
