// The queries' and keys' shaping (model/attention.h) as one op, one pass per
// row forward and one backward:
//   z = [x ; c − x]                       x [N, T, D], c the negator (scalar)
//   y = LayerNorm(z) · g + b              over the 2D features, eps
//   out = y with features [0, D) rotated in pairs by cos, sin (ops/rotary.h)
// Since z's mean is c/2 and its variance mean((x − c/2)²) over the D features
// (the second half mirrors the first), with u = x − c/2,
// r = 1/sqrt(mean(u²) + eps), n = u·r:
//   y = [n·g₁ + b₁ ; −n·g₂ + b₂]
// and backward, with dy the gradient un-rotated, dn = dy₁·g₁ − dy₂·g₂:
//   du = r·(dn − n·mean(dn·n)),  dx = du,  dc = −½·Σ du,
//   dg = Σ_rows [dy₁·n ; −dy₂·n],  db = Σ_rows dy.
// CPU float32 runs these loops (one op where the expression is a sub, a cat,
// a layer norm and a rotation, each its own pass and allocation), x in
// float32 or bfloat16 (a product's output; the output float32 either way, dx
// in x's dtype); other devices and dtypes run the expression
// (negated_norm_rotary_unfused, x taken to g's dtype).
#pragma once
#include <torch/torch.h>

namespace bakallm {

// x [N, T, D]; c a scalar tensor; g, b [2D]; cos, sin [T, D/2] or [N, T, D/2].  -> [N, T, 2D]
torch::Tensor negated_norm_rotary(const torch::Tensor& x, const torch::Tensor& c, const torch::Tensor& g,
                                  const torch::Tensor& b, double eps, const torch::Tensor& cos,
                                  const torch::Tensor& sin);

// The same as the ops it replaces (any device and dtype): cat, layer_norm,
// rotate_pairs (ops/rotary.h).
torch::Tensor negated_norm_rotary_unfused(const torch::Tensor& x, const torch::Tensor& c, const torch::Tensor& g,
                                          const torch::Tensor& b, double eps, const torch::Tensor& cos,
                                          const torch::Tensor& sin);

}  // namespace bakallm
