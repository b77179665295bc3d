#include "ops/negated_norm.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "ops/autograd.h"
#include "ops/avx512.h"
#include "ops/cpu.h"
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
__attribute__((always_inline)) inline float normalize(const float* x, float half_c, int64_t D, double eps, float* n) {
  const float s = chained_sum<float>(x, D, [&](float v) { return (v - half_c) * (v - half_c); });
  const float r = 1.0f / std::sqrt(s / static_cast<float>(D) + static_cast<float>(eps));
  for (int64_t i = 0; i < D; ++i) n[i] = (x[i] - half_c) * r;
  return r;
}

// Row R of x [rows, D] as float32: in place, or (bfloat16) widened into BUFFER [D].
__attribute__((always_inline)) inline const float* row(const float* x, int64_t r, int64_t D, float*) {
  return x + r * D;
}
__attribute__((always_inline)) inline const float* row(const c10::BFloat16* x, int64_t r, int64_t D, float* buffer) {
  for (int64_t i = 0; i < D; ++i) buffer[i] = x[r * D + i];
  return buffer;
}

// One call's operands: x [rows, D] (X_T: float, or c10::BFloat16 where a
// product's output in bfloat16), g and b [2D], the angles cos/sin; forward
// out [rows, 2D] (float32); backward dout [rows, 2D] and dx [rows, D] in x's
// dtype.
template <typename X_T>
struct Pass {
  const X_T* x;
  const float *g, *b, *cos, *sin;
  Rows R;
  float half_c;
  double eps;
  float* out = nullptr;
  const float* dout = nullptr;
  int64_t dout_slice = 0;  // dout's stride between its N slices of T rows (T·2D, or more where they lie apart)
  X_T* dx = nullptr;
};

// The normed row N scaled, shifted and rotated into O [2D]: the first half
// in one pass (rotate_row in place after the affine pass measured ~5% slower
// on a training batch). restrict: as far as the compiler knows the buffers
// could overlap the output (the backward's sums stayed scalar for that).
__attribute__((always_inline)) inline void shape_row(int64_t D, const float* __restrict n, const float* __restrict g,
                                                     const float* __restrict b, const float* __restrict cr,
                                                     const float* __restrict sr, float* __restrict o) {
  for (int64_t j = 0; j < D / 2; ++j) {
    const float even = n[2 * j] * g[2 * j] + b[2 * j], odd = n[2 * j + 1] * g[2 * j + 1] + b[2 * j + 1];
    o[2 * j] = even * cr[j] - odd * sr[j];
    o[2 * j + 1] = odd * cr[j] + even * sr[j];
  }
  for (int64_t i = 0; i < D; ++i) o[D + i] = -n[i] * g[D + i] + b[D + i];
}

template <typename X_T>
__attribute__((always_inline)) inline void forward_rows(const Pass<X_T>& p, int64_t r0, int64_t r1) {
  const int64_t D = p.R.D;
  thread_local std::vector<float> buffers;  // no allocation a call (a decoded token makes 16)
  buffers.resize(2 * D);
  float *n = buffers.data(), *xr = n + D;
  for (int64_t r = r0; r < r1; ++r) {
    normalize(row(p.x, r, D, xr), p.half_c, D, p.eps, n);
    shape_row(D, n, p.g, p.b, p.cos + p.R.angles(r), p.sin + p.R.angles(r), p.out + r * 2 * D);
  }
}

// The same loops compiled for AVX-512 (16 float lanes against SSE2's 4).
template <typename X_T>
BAKALLM_AVX512_WIDE void forward_rows_avx512(const Pass<X_T>& p, int64_t r0, int64_t r1) {
  forward_rows(p, r0, r1);
}

template <typename X_T>
Tensor forward_cpu(const Tensor& x_in, float c, const Tensor& g_in, const Tensor& b_in, double eps,
                   const Tensor& cos_in, const Tensor& sin_in) {
  const auto x = x_in.contiguous(), g = g_in.contiguous(), b = b_in.contiguous();
  const auto cos = cos_in.contiguous(), sin = sin_in.contiguous();
  auto out = empty_rows({x.size(0), x.size(1), 2 * x.size(2)}, torch::kFloat, x.device());
  Pass<X_T> p{x.data_ptr<X_T>(), g.data_ptr<float>(), b.data_ptr<float>(), cos.data_ptr<float>(),
              sin.data_ptr<float>(), rows_of(x, cos), 0.5f * c, eps};
  p.out = out.data_ptr<float>();
  at::parallel_for(0, p.R.count, std::max<int64_t>(1, (1 << 14) / (2 * p.R.D)), [&](int64_t r0, int64_t r1) {
    if (kernel_isa() == Isa::kAvx512) return forward_rows_avx512(p, r0, r1);
    forward_rows(p, r0, r1);
  });
  return out;
}

// Rows whose sums of dg, db and dc gather in float32 before they are added
// into the thread's double sums: a double add per value and row (its
// conversion too) had bound the whole backward.
constexpr int64_t kBlockRows = 32;

// One row's terms of dg = Σ_rows [dy₁·n ; −dy₂·n] and db = Σ_rows dy, added
// in; restrict: the sums and the row's buffers share one allocation, and
// without it the compiler left this loop scalar (most of the backward).
__attribute__((always_inline)) inline void add_row_sums(int64_t D, const float* __restrict dy1,
                                                        const float* __restrict dy2, const float* __restrict n,
                                                        float* __restrict dg1, float* __restrict dg2,
                                                        float* __restrict db1, float* __restrict db2) {
  for (int64_t i = 0; i < D; ++i) {
    dg1[i] += dy1[i] * n[i];
    dg2[i] -= dy2[i] * n[i];
    db1[i] += dy1[i];
    db2[i] += dy2[i];
  }
}

// The backward of rows [r0, r1): their dx, and their dg [2D], db [2D] and
// dc added into ACC [4D + 1]. A row's loops are elementwise over float32
// buffers and chained sums (chained_sum_at), which the compiler vectorises.
template <typename X_T>
__attribute__((always_inline)) inline void backward_rows(const Pass<X_T>& p, int64_t r0, int64_t r1,
                                                         double* acc) {
  const int64_t D = p.R.D;
  std::vector<float> buffers(8 * D + 1, 0.0f);
  float *n = buffers.data(), *dy = n + D, *dn = dy + D, *xr = dn + D, *sums = xr + D;  // sums [4D + 1]
  float *dg1 = sums, *dg2 = sums + D, *db1 = sums + 2 * D, *db2 = sums + 3 * D;
  const float *g1 = p.g, *g2 = p.g + D;
  for (int64_t r = r0; r < r1; ++r) {
    const float rr = normalize(row(p.x, r, D, xr), p.half_c, D, p.eps, n);
    const float* d = p.dout + (r / p.R.T) * p.dout_slice + (r % p.R.T) * 2 * D;
    const float* dy2 = d + D;
    rotate_row(d, p.cos + p.R.angles(r), p.sin + p.R.angles(r), -1.0f, D / 2, dy);  // the rotation back: dy₁
    for (int64_t i = 0; i < D; ++i) dn[i] = dy[i] * g1[i] - dy2[i] * g2[i];
    const float m = chained_sum_at<float>(D, [&](int64_t i) { return dn[i] * n[i]; }) / static_cast<float>(D);
    add_row_sums(D, dy, dy2, n, dg1, dg2, db1, db2);
    for (int64_t i = 0; i < D; ++i) dn[i] = rr * (dn[i] - n[i] * m);  // du
    sums[4 * D] -= 0.5f * chained_sum<float>(dn, D, [](float v) { return v; });
    X_T* out = p.dx + r * D;
    for (int64_t i = 0; i < D; ++i) out[i] = dn[i];  // bfloat16: rounded once
    if ((r - r0) % kBlockRows == kBlockRows - 1 || r + 1 == r1) {
      for (int64_t i = 0; i < 4 * D + 1; ++i) acc[i] += sums[i];
      std::fill(sums, sums + 4 * D + 1, 0.0f);
    }
  }
}

// The same loops compiled for AVX-512 (16 float lanes against SSE2's 4).
template <typename X_T>
BAKALLM_AVX512_WIDE void backward_rows_avx512(const Pass<X_T>& p, int64_t r0, int64_t r1, double* acc) {
  backward_rows(p, r0, r1, acc);
}

// Gradients of x (in x's dtype, X_T), c, g, b given dout [N, T, 2D].
template <typename X_T>
std::vector<Tensor> backward_cpu(const Tensor& x_in, float c, const Tensor& g_in, double eps, const Tensor& cos_in,
                                 const Tensor& sin_in, const Tensor& dout_in) {
  const auto x = x_in.contiguous(), g = g_in.contiguous();
  // dout's slices as they lie where apart (the keys' gradient, a narrow of the cat's): no copy
  const auto dout = slices_apart(dout_in) ? dout_in : dout_in.contiguous();
  const auto cos = cos_in.contiguous(), sin = sin_in.contiguous();
  auto dx = torch::empty_like(x);
  Pass<X_T> p{x.data_ptr<X_T>(), g.data_ptr<float>(), nullptr, cos.data_ptr<float>(), sin.data_ptr<float>(),
              rows_of(x, cos), 0.5f * c, eps};
  p.dout = dout.data_ptr<float>();
  p.dout_slice = dout.stride(0);
  p.dx = dx.data_ptr<X_T>();
  const int64_t D = p.R.D;
  // Per thread: dg [2D], db [2D], dc, summed after (in double: many rows).
  const int threads = at::get_num_threads();
  std::vector<std::vector<double>> partial(threads, std::vector<double>(4 * D + 1, 0.0));
  at::parallel_for(0, p.R.count, std::max<int64_t>(1, (1 << 14) / (2 * D)), [&](int64_t r0, int64_t r1) {
    double* acc = partial[at::get_thread_num()].data();
    if (kernel_isa() == Isa::kAvx512) return backward_rows_avx512(p, r0, r1, acc);
    backward_rows(p, r0, r1, acc);
  });
  std::vector<double> total(4 * D + 1, 0.0);
  for (const auto& part : partial)
    for (int64_t i = 0; i < 4 * D + 1; ++i) total[i] += part[i];
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
