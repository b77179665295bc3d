// The model's gates as one op each (model/gate.h, model/mlp.h, model/block.h):
//   sigmoid_gate(x, z, base) = base + x ⊙ σ(z)       base optional (then 0)
//   relu_gate(u, g)          = u ⊙ relu(g)
// one pass forward and one backward, where the expressions they replace
// (sigmoid, mul, add; relu, mul) run two or three passes each way and keep
// σ(z) or relu(g) as another tensor for the backward. Backward, with s = σ(z):
//   dbase = dy,  dx = dy ⊙ s,  dz = dy ⊙ x ⊙ s ⊙ (1 − s)
//   du = dy ⊙ relu(g),  dg = dy ⊙ u where g > 0, else 0.
// CPU operands of one shape run these loops (AVX-512 with ops/avx512.h's
// exp16 where the CPU has it): float32, or bfloat16 products' outputs (z; x
// and z onto a float32 base, the result float32; u and g), each value
// computed in float32 and rounded once; other devices, dtypes and broadcast
// shapes run the expressions (the *_unfused functions).
#pragma once
#include <torch/torch.h>

namespace bakallm {

torch::Tensor sigmoid_gate(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& base = {});
torch::Tensor relu_gate(const torch::Tensor& u, const torch::Tensor& g);

// The expressions they replace (any device, dtype and broadcast).
torch::Tensor sigmoid_gate_unfused(const torch::Tensor& x, const torch::Tensor& z, const torch::Tensor& base = {});
torch::Tensor relu_gate_unfused(const torch::Tensor& u, const torch::Tensor& g);

}  // namespace bakallm
