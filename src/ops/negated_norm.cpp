#include "ops/negated_norm.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "ops/autograd.h"
#include "ops/fast_tensor.h"
#include "ops/rotary.h"
#include "ops/row_norm.h"
#include "ops/trace.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows of x [N·T, D] and where each row's angles start in cos/sin [·, D/2].
struct Rows {
  int64_t count, T, D;
  bool per_row;  // angles [N, T, D/2]: each row its own; else [T, D/2]: by t
  int64_t angles(int64_t r) const { return (per_row ? r : r % T) * (D / 2); }
};

Rows rows_of(const Tensor& x, const Tensor& cos) { return {x.size(0) * x.size(1), x.size(1), x.size(2), cos.dim() == 3}; }

// u = x − c/2, r = 1/sqrt(mean(u²) + eps); writes n = u·r into N, returns r.
// Σu² over interleaved chains (chained_sum): one chain's dependent adds had
// taken a third of a decoded row's op (D = 320, BM_RowOps).
float normalize(const float* x, float half_c, int64_t D, double eps, float* n) {
  const float s = chained_sum<float>(x, D, [&](float v) { return (v - half_c) * (v - half_c); });
  const float r = 1.0f / std::sqrt(s / static_cast<float>(D) + static_cast<float>(eps));
  for (int64_t i = 0; i < D; ++i) n[i] = (x[i] - half_c) * r;
  return r;
}

// Row R of x [rows, D] as float32: in place, or (bfloat16) widened into BUFFER.
const float* row(const float* x, int64_t r, int64_t D, std::vector<float>&) { return x + r * D; }
const float* row(const c10::BFloat16* x, int64_t r, int64_t D, std::vector<float>& buffer) {
  for (int64_t i = 0; i < D; ++i) buffer[i] = x[r * D + i];
  return buffer.data();
}

// X_T: x's element type (float, or c10::BFloat16: a product's output in
// bfloat16); everything else float32, the output too.
template <typename X_T>
Tensor forward_cpu(const Tensor& x_in, float c, const Tensor& g_in, const Tensor& b_in, double eps,
                   const Tensor& cos_in, const Tensor& sin_in) {
  const auto x = x_in.contiguous(), g = g_in.contiguous(), b = b_in.contiguous();
  const auto cos = cos_in.contiguous(), sin = sin_in.contiguous();
  const auto R = rows_of(x, cos);
  const int64_t D = R.D;
  auto out = empty_rows({x.size(0), x.size(1), 2 * D}, torch::kFloat, x.device());
  const X_T* px = x.data_ptr<X_T>();
  const float *pg = g.data_ptr<float>(), *pb = b.data_ptr<float>();
  const float *pc = cos.data_ptr<float>(), *ps = sin.data_ptr<float>();
  float* po = out.data_ptr<float>();
  at::parallel_for(0, R.count, std::max<int64_t>(1, (1 << 14) / (2 * D)), [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> n, xr;  // no allocation a call (a decoded token makes 16)
    n.resize(D);
    xr.resize(D);
    for (int64_t r = r0; r < r1; ++r) {
      normalize(row(px, r, D, xr), 0.5f * c, D, eps, n.data());
      float* o = po + r * 2 * D;
      const float *cr = pc + R.angles(r), *sr = ps + R.angles(r);
      // The first half scaled, shifted and rotated in one pass (rotate_row in
      // place after the affine pass measured ~5% slower on a training batch).
      for (int64_t j = 0; j < D / 2; ++j) {
        const float even = n[2 * j] * pg[2 * j] + pb[2 * j], odd = n[2 * j + 1] * pg[2 * j + 1] + pb[2 * j + 1];
        o[2 * j] = even * cr[j] - odd * sr[j];
        o[2 * j + 1] = odd * cr[j] + even * sr[j];
      }
      for (int64_t i = 0; i < D; ++i) o[D + i] = -n[i] * pg[D + i] + pb[D + i];
    }
  });
  return out;
}

// Gradients of x (in x's dtype, X_T), c, g, b given dout [N, T, 2D].
template <typename X_T>
std::vector<Tensor> backward_cpu(const Tensor& x_in, float c, const Tensor& g_in, double eps, const Tensor& cos_in,
                                 const Tensor& sin_in, const Tensor& dout_in) {
  const auto x = x_in.contiguous(), g = g_in.contiguous(), dout = dout_in.contiguous();
  const auto cos = cos_in.contiguous(), sin = sin_in.contiguous();
  const auto R = rows_of(x, cos);
  const int64_t D = R.D;
  auto dx = torch::empty_like(x);
  const X_T* px = x.data_ptr<X_T>();
  const float *pg = g.data_ptr<float>(), *pd = dout.data_ptr<float>();
  const float *pc = cos.data_ptr<float>(), *ps = sin.data_ptr<float>();
  X_T* pdx = dx.data_ptr<X_T>();
  // Per thread: dg [2D], db [2D], dc, summed after (in double: many rows).
  const int threads = at::get_num_threads();
  std::vector<std::vector<double>> partial(threads, std::vector<double>(4 * D + 1, 0.0));
  at::parallel_for(0, R.count, std::max<int64_t>(1, (1 << 14) / (2 * D)), [&](int64_t r0, int64_t r1) {
    auto& acc = partial[at::get_thread_num()];
    std::vector<float> n(D), dy(2 * D), dn(D), xr(D);
    for (int64_t r = r0; r < r1; ++r) {
      const float rr = normalize(row(px, r, D, xr), 0.5f * c, D, eps, n.data());
      const float* d = pd + r * 2 * D;
      rotate_row(d, pc + R.angles(r), ps + R.angles(r), -1.0f, D / 2, dy.data());  // the rotation back
      for (int64_t i = D; i < 2 * D; ++i) dy[i] = d[i];
      float m = 0;
      for (int64_t i = 0; i < D; ++i) {
        dn[i] = dy[i] * pg[i] - dy[D + i] * pg[D + i];
        m += dn[i] * n[i];
        acc[i] += dy[i] * n[i];               // dg₁
        acc[D + i] -= dy[D + i] * n[i];       // dg₂
        acc[2 * D + i] += dy[i];              // db₁
        acc[3 * D + i] += dy[D + i];          // db₂
      }
      m /= static_cast<float>(D);
      X_T* out = pdx + r * D;
      float sum = 0;
      for (int64_t i = 0; i < D; ++i) {
        const float du = rr * (dn[i] - n[i] * m);
        out[i] = du;  // bfloat16: rounded once
        sum += du;
      }
      acc[4 * D] -= 0.5 * sum;
    }
  });
  std::vector<double> total(4 * D + 1, 0.0);
  for (const auto& p : partial)
    for (int64_t i = 0; i < 4 * D + 1; ++i) total[i] += p[i];
  auto sums = torch::tensor(total, torch::kDouble).to(torch::kFloat);
  return {dx, sums[4 * D], sums.narrow(0, 0, 2 * D).clone(), sums.narrow(0, 2 * D, 2 * D).clone()};
}

// The negator's value: read in place on the CPU (a decoded token asks twice a
// layer; item() is a dispatched op), item() elsewhere.
float scalar(const Tensor& c) {
  return c.device().is_cpu() && c.scalar_type() == torch::kFloat ? *c.data_ptr<float>() : c.item<float>();
}

bool fused(const Tensor& x, const Tensor& g, const Tensor& cos) {
  return x.device().is_cpu() && (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16) &&
         g.scalar_type() == torch::kFloat && cos.scalar_type() == torch::kFloat && x.dim() == 3 && x.size(2) % 2 == 0;
}

Tensor forward_any(const Tensor& x, float c, const Tensor& g, const Tensor& b, double eps, const Tensor& cos,
                   const Tensor& sin) {
  return x.scalar_type() == torch::kBFloat16 ? forward_cpu<c10::BFloat16>(x, c, g, b, eps, cos, sin)
                                             : forward_cpu<float>(x, c, g, b, eps, cos, sin);
}

class NegatedNormRotary : public torch::autograd::Function<NegatedNormRotary> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& c, const Tensor& g, const Tensor& b,
                        double eps, const Tensor& cos, const Tensor& sin) {
    ctx->save_for_backward({x, c, g});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    return forward_any(x, scalar(c), g, b, eps, cos, sin);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto c = saved[1];
    const auto backward = saved[0].scalar_type() == torch::kBFloat16 ? backward_cpu<c10::BFloat16> : backward_cpu<float>;
    auto d = backward(saved[0], scalar(c), saved[2], ctx->saved_data["eps"].toDouble(),
                      ctx->saved_data["cos"].toTensor(), ctx->saved_data["sin"].toTensor(), grads[0].to(torch::kFloat));
    return {d[0], d[1].reshape(c.sizes()), d[2], d[3], Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor negated_norm_rotary_unfused(const Tensor& x, const Tensor& c, const Tensor& g, const Tensor& b, double eps,
                                   const Tensor& cos, const Tensor& sin) {
  const int64_t D = x.size(-1);
  const auto xg = x.to(g.scalar_type());  // a bfloat16 x (a product's output) normed in g's dtype
  const auto y = torch::layer_norm(torch::cat({xg, c - xg}, -1), {2 * D}, g, b, eps);  // [N, T, 2D]
  return rotate_pairs(y, cos.to(y.scalar_type()), sin.to(y.scalar_type()), D);
}

Tensor negated_norm_rotary(const Tensor& x, const Tensor& c, const Tensor& g, const Tensor& b, double eps,
                           const Tensor& cos, const Tensor& sin) {
  BAKALLM_TRACE("negated_norm_rotary");
  TORCH_CHECK(x.dim() == 3 && c.numel() == 1 && g.numel() == 2 * x.size(2) && b.numel() == 2 * x.size(2),
              "negated_norm_rotary: x [N, T, D], a scalar c, g and b [2D]");
  TORCH_CHECK(cos.sizes() == sin.sizes() && cos.size(-1) == x.size(2) / 2 && cos.size(-2) == x.size(1) &&
                  (cos.dim() == 2 || (cos.dim() == 3 && cos.size(0) == x.size(0))),
              "negated_norm_rotary: cos and sin must be [T, D/2] or [N, T, D/2]");
  if (!fused(x, g, cos)) return negated_norm_rotary_unfused(x, c, g, b, eps, cos, sin);
  if (!wants_grad(x, c, g, b)) return forward_any(x, scalar(c), g, b, eps, cos, sin);
  return NegatedNormRotary::apply(x, c, g, b, eps, cos, sin);
}

}  // namespace bakallm
