// Matrix products on oneDNN (Debian's libdnnl, the library libtorch itself
// links), called directly: the primitive reads libtorch's buffers in place,
// transposed or not, so no layout conversion and no weight reorder happens
// per call (libtorch's mkldnn_linear converts both operands and the result).
// Operands whose rows (or columns) lie back to back, the model's case, share
// one primitive per layout and dtype whose sizes are given at run time, so
// no shape ever pays oneDNN's primitive creation (but see ProductPath: AMX). Measured on this
// project's CPU (BENCHMARKS.md): 210-280 GFLOP/s float32 against 117-231
// through mkldnn_linear and 36-56 through OpenBLAS, gemv at memory speed for
// decoding. Built only where libdnnl is found; CUDA tensors never come here.
#pragma once
#include <torch/torch.h>

namespace bakallm::onednn {

// Whether this build has oneDNN.
bool available();

// Whether matmul runs operands of DTYPE on this CPU: float32 always,
// bfloat16 where oneDNN has a kernel for it (asked once).
bool supports(torch::ScalarType dtype);

// C = A · B on the CPU.
// a: [M, K] or [G, M, K]; b: [K, N] or [G, K, N] (same G when both are 3-D).
// Each 2-D slice may be row- or column-major (a transposed view is free);
// other layouts are made contiguous first. A and B share one dtype, float32 or
// bfloat16; the result is a new contiguous tensor of dtype OUT (float32 or
// a's dtype): [M, N] or [G, M, N].
torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b, torch::ScalarType out);

// C += A · B: as matmul, into C (contiguous [M, N] or [G, M, N], float32 or
// A's dtype), by oneDNN's sum post-op: the product's result is added to C as
// it is stored, no temporary and no second pass over C.
void matmul_add(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& c);

// Which primitive a product over gap-free operands runs. Run-time sizes
// (one jit gemm per layout and dtype, no creation per shape) serve every
// product, except bfloat16 ones where oneDNN's per-shape brgemm runs on AMX
// tiles: there the jit gemm does not use AMX and measured 2-2.5x slower on
// the model's training products (BENCHMARKS.md, session 27). A product goes
// per shape where per_shape() says; those shapes repeat every step and window,
// so brgemm's creation (0.3-2.9 ms measured) is paid once per shape, and
// few-row products (decoding) stay on the jit gemv. So do products over a
// long depth K (the LM head's d(hidden) = dlogits · W sums over the 32,000-word
// vocabulary): there brgemm took twice the jit gemm's time on tiny's and
// base's heads (190-400 GFLOP/s against 425-1,250; BENCHMARKS.md, session 28).
// Float32 products go per shape where their left operand is read transposed
// (A_TRANSPOSED: the weight gradients dyᵀ · x, the attention's dSᵀ · Q and
// Pᵀ · dO, the head's dlogitsᵀ · hidden): alone, the jit gemm ran tiny's
// weight gradients at 0.74-0.83 of the 1,024³ peak, brgemm (avx512_core) at
// 0.86-0.90 (the attention's at 0.85 and 0.84); in tiny's step they took
// 6-18% less time and the step 2-5% less. On the other float32 products the
// jit gemm is as fast or faster (BENCHMARKS.md, session 30).
constexpr int64_t kPerShapeMinRows = 64;
constexpr double kPerShapeMinFlops = 64.0 * 1024 * 1024;  // ~0.1 ms on AMX: creation pays back in a few calls
constexpr int64_t kPerShapeMaxDepth = 16384;
bool per_shape(int64_t G, int64_t M, int64_t K, int64_t N, torch::ScalarType dtype, bool amx, bool a_transposed);

// Whether this CPU runs oneDNN's per-shape bfloat16 products on AMX (asked once).
bool amx_products();

// automatic: per_shape() with amx_products(); the others force a path (tests, benchmarks).
enum class ProductPath { automatic, run_time, per_shape };
void set_product_path(ProductPath path);

// Wall time inside oneDNN's products, summed over every thread, while
// counting is on (off by default: two clock reads a product): with a training
// step's time it splits the step into its products and the work between
// them, which bench reports beside MFU. And the FLOPs those products ran
// (2·M·N·K each), which bench sets beside the FLOPs MFU counts.
void count_product_time(bool on);
double product_seconds();  // since the process started
double product_flops();    // since the process started

// Primitives kept for reuse: one per layout and dtype, plus one per shape for
// operands with padded rows (bounded).
size_t cached_primitives();

}  // namespace bakallm::onednn
