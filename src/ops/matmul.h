// The engine's one matrix product, y = a · bᵀ, with the kernel choice in one
// place. On CPU it runs oneDNN directly (ops/onednn.h), measured 7x faster
// than the OpenBLAS sgemm libtorch uses by default here (OpenBLAS does not
// recognise this CPU and runs its generic Prescott kernels; BENCHMARKS.md);
// elsewhere it is torch::matmul. Products of a few float32 rows with a
// weight stored in the compute dtype (decoding) run the row kernel
// (ops/row_product.h) where the CPU has AVX-512. Its autograd backward uses the same product:
// da = dy · b, db = dyᵀ · a, in the same compute dtype.
#pragma once
#include <torch/torch.h>

#include "ops/row_product.h"

namespace bakallm {

// The dtype a product with an operand of dtype OPERAND runs in: COMPUTE, but
// double stays double (gradient checks: a float32 product would hide the
// differences).
inline torch::ScalarType product_dtype(torch::ScalarType operand, torch::ScalarType compute) {
  return operand == torch::kDouble ? torch::kDouble : compute;
}

// a: [..., M, K], b: [..., N, K] (same leading dims, or b 2-D)   -> [..., M, N]
// COMPUTE: the dtype the product runs in (kFloat or kBFloat16; double
// operands always run in double); the result comes back in OUT (Undefined:
// a's dtype), a's gradient in a's dtype.
// B_COMPUTE: b already cast to COMPUTE (a weight's kept copy, ops/cast_cache.h),
// used in the product in place of a new cast; b's gradient still goes to b.
torch::Tensor matmul_nt(const torch::Tensor& a, const torch::Tensor& b,
                        torch::ScalarType compute = torch::kFloat, const torch::Tensor& b_compute = {},
                        torch::ScalarType out = torch::ScalarType::Undefined);

// C += a · bᵀ, outside autograd: a [..., M, K], b [N, K], C [..., M, N]. On
// oneDNN (C contiguous, float32 or COMPUTE) the product's result is added
// to C as it is stored: no temporary, no second pass over C; elsewhere a
// product and add_.
void matmul_nt_add(const torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b,
                   torch::ScalarType compute = torch::kFloat);

// While one lives on this thread, the products of A that autograd records
// (matmul_nt with A as the left operand) send A's gradient to one buffer:
// the first backward among them writes its dy · b there, each later one adds
// to it in the product itself (oneDNN's sum post-op), and the last returns
// the sum, the others none. Without it autograd adds one [..., K] gradient
// per product after the next (a block's normed input h feeds q, k, fc_gate
// and fc_up: three passes over h's gradient a layer and window). Every such
// product of A must reach the loss (each backward has to run for the sum to
// be returned: the model's products do; a sum left unreturned warns).
// A must not change in place while it lives.
class SumGradients {
 public:
  explicit SumGradients(const torch::Tensor& a);  // nothing where autograd does not record A
  ~SumGradients();
  SumGradients(const SumGradients&) = delete;
  SumGradients& operator=(const SumGradients&) = delete;

 private:
  const void* input_ = nullptr;  // A's TensorImpl, while open
};

// The dtype for a product's output that only other products read, through
// elementwise ops (the MLP's inner activations): COMPUTE where it is
// bfloat16 and a has more rows than the row kernel takes (no cast before the
// next product, nor of the gradient coming back; half the bytes in between),
// else a's dtype.
torch::ScalarType inner_dtype(const torch::Tensor& a, torch::ScalarType compute);

// a [..., K] float32 (K a multiple of 32, the CPU with AVX-512 or not) times
// a stored weight W [N, K] that the row kernel reads in place (ops/row_product.h:
// KIND, SCALES for Q8_0) -> [..., N] float32. For a few rows: each is a pass
// over the whole weight.
torch::Tensor rows_nt(const torch::Tensor& a, const void* w, const float* scales, RowWeights kind, int64_t N);

// FLOP/s of [n, n] · [n, n]ᵀ through matmul_nt in COMPUTE on the CPU (operands
// already in COMPUTE, one product first untimed; the best of ROUNDS rounds of
// REPS products), measured now (the peak that MFU figures and the bfloat16
// advice use; bench's probes between training steps take one short round).
double measure_matmul_flops(torch::ScalarType compute, int64_t n = 1024, int rounds = 3, int reps = 5);

// Whether the oneDNN path is built and enabled (environment BAKALLM_ONEDNN=0 disables it).
bool onednn_enabled();

}  // namespace bakallm
