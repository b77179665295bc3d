// The engine's one matrix product, y = a · bᵀ, with the kernel choice in one
// place. On CPU in float32 it runs oneDNN (libtorch's mkldnn_linear), measured
// 3-5x faster than the OpenBLAS sgemm libtorch uses by default on the AVX-512
// machines here (BENCHMARKS.md); elsewhere it is torch::matmul. Its autograd
// backward uses the same product: da = dy · b, db = dyᵀ · a.
#pragma once
#include <torch/torch.h>

namespace bakallm {

// a: [..., M, K], b: [..., N, K] (same leading dims, or b 2-D)   -> [..., M, N]
// COMPUTE: the dtype the product runs in (kFloat or kBFloat16); the result
// comes back in a's dtype.
torch::Tensor matmul_nt(const torch::Tensor& a, const torch::Tensor& b,
                        torch::ScalarType compute = torch::kFloat);

// Whether the oneDNN float32 path is available and enabled (BAKALLM_ONEDNN=0 disables it).
bool onednn_enabled();

}  // namespace bakallm
