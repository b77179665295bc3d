#include "ops/rotary.h"

#include <ATen/Parallel.h>

#include "ops/fast_tensor.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The same on contiguous float32: one pass over the rows.
Tensor rotate_cpu(const Tensor& x_in, const Tensor& cos_in, const Tensor& sin_in, int64_t D, float sign) {
  const auto x = x_in.contiguous(), cos = cos_in.contiguous(), sin = sin_in.contiguous();
  auto y = empty_as(x);
  const int64_t T = x.size(1), F = x.size(2), rows = x.size(0) * T, half = D / 2;
  const bool per_row = cos.dim() == 3;  // [N, T, D/2]: each row its own angles
  const float *px = x.data_ptr<float>(), *pc = cos.data_ptr<float>(), *ps = sin.data_ptr<float>();
  float* py = y.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(F, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = px + r * F;
      float* yr = py + r * F;
      const int64_t a = (per_row ? r : r % T) * half;  // the row's angles
      rotate_row(xr, pc + a, ps + a, sign, half, yr);
      for (int64_t f = D; f < F; ++f) yr[f] = xr[f];
    }
  });
  return y;
}

bool fused(const Tensor& x, const Tensor& cos) {
  return x.device().is_cpu() && x.scalar_type() == torch::kFloat && cos.scalar_type() == torch::kFloat &&
         x.dim() == 3;
}

Tensor rotate(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t D, float sign) {
  return fused(x, cos) ? rotate_cpu(x, cos, sin, D, sign) : rotate_pairs_unfused(x, cos, sin, D, sign);
}

class RotatePairs : public torch::autograd::Function<RotatePairs> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t D) {
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    ctx->saved_data["D"] = D;
    return rotate(x, cos, sin, D, 1.0f);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto cos = ctx->saved_data["cos"].toTensor(), sin = ctx->saved_data["sin"].toTensor();
    return {rotate(grads[0], cos, sin, ctx->saved_data["D"].toInt(), -1.0f), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor rotate_pairs_unfused(const Tensor& x, const Tensor& cos, const Tensor& s, int64_t D, double sign) {
  const auto sin = sign < 0 ? -s : s;
  auto pairs = x.narrow(-1, 0, D).unflatten(-1, {D / 2, 2});  // [N, T, D/2, 2]
  auto even = pairs.select(-1, 0), odd = pairs.select(-1, 1);
  auto out = torch::stack({even * cos - odd * sin, odd * cos + even * sin}, -1).flatten(-2);
  return D == x.size(-1) ? out : torch::cat({out, x.narrow(-1, D, x.size(-1) - D)}, -1);
}

Tensor rotate_pairs(const Tensor& x, const Tensor& cos, const Tensor& sin, int64_t D) {
  TORCH_CHECK(x.dim() == 3 && D % 2 == 0 && D <= x.size(-1), "rotate_pairs: x must be [N, T, F >= D], D even");
  TORCH_CHECK(cos.sizes() == sin.sizes() && cos.size(-1) == D / 2 && cos.size(-2) == x.size(1) &&
                  (cos.dim() == 2 || (cos.dim() == 3 && cos.size(0) == x.size(0))),
              "rotate_pairs: cos and sin must be [T, D/2] or [N, T, D/2]");
  if (!x.requires_grad()) return rotate(x, cos, sin, D, 1.0f);
  return RotatePairs::apply(x, cos, sin, D);
}

}  // namespace bakallm
