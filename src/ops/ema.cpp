#include "ops/ema.h"

#include <ATen/Parallel.h>

#include <type_traits>
#include <vector>

#include "ops/autograd.h"
#include "ops/avx512.h"
#include "ops/cpu.h"
#include "ops/fast_tensor.h"
#include "ops/trace.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kFeatureBlock = 16;  // features per parallel task
constexpr int64_t kParallelWork = 1 << 16;  // elements below which a scan stays on one thread

// Features per task: all of them (one thread) when the scan is too small to share.
inline int64_t feature_grain(int64_t B, int64_t Tn, int64_t D) {
  return B * Tn * D < kParallelWork ? std::max<int64_t>(D, 1) : kFeatureBlock;
}

// y[b,t,d] = q[d] * y[b,t-1,d] + a[d] * u[b,t,d],  y[b,-1,d] = y0[b,d], for features [d0, d1)
template <typename T>
__attribute__((always_inline)) inline void scan_forward_features(const T* u, const T* a, const T* q, const T* y0,
                                                                 T* y, int64_t B, int64_t Tn, int64_t D, int64_t d0,
                                                                 int64_t d1) {
  for (int64_t b = 0; b < B; ++b) {
    const T* ub = u + b * Tn * D;
    const T* y0b = y0 + b * D;
    T* yb = y + b * Tn * D;
    for (int64_t d = d0; d < d1; ++d) yb[d] = q[d] * y0b[d] + a[d] * ub[d];
    for (int64_t t = 1; t < Tn; ++t) {
      const T* ut = ub + t * D;
      const T* yp = yb + (t - 1) * D;
      T* yt = yb + t * D;
      for (int64_t d = d0; d < d1; ++d) yt[d] = q[d] * yp[d] + a[d] * ut[d];
    }
  }
}

// The backward of features [d0, d1): gu, and ga, gq, gy0 (sums in double).
template <typename T>
__attribute__((always_inline)) inline void scan_backward_features(const T* gy, const T* u, const T* y, const T* a,
                                                                  const T* q, const T* y0, T* gu, T* ga, T* gq,
                                                                  T* gy0, int64_t B, int64_t Tn, int64_t D,
                                                                  int64_t d0, int64_t d1) {
  const int64_t n = d1 - d0;
  std::vector<T> g(n);  // running g_{t+1}
  std::vector<double> sa(n, 0.0), sq(n, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(g.begin(), g.end(), T(0));
    const int64_t base = b * Tn * D;
    for (int64_t t = Tn - 1; t >= 0; --t) {
      const int64_t row = base + t * D;
      const T* prev = t > 0 ? y + row - D : y0 + b * D;  // y_{t-1}
      for (int64_t i = 0; i < n; ++i) {
        const int64_t d = d0 + i;
        const T gt = gy[row + d] + q[d] * g[i];
        g[i] = gt;
        gu[row + d] = a[d] * gt;
        sa[i] += static_cast<double>(gt) * u[row + d];
        sq[i] += static_cast<double>(gt) * prev[d];
      }
    }
    for (int64_t i = 0; i < n; ++i) gy0[b * D + d0 + i] = q[d0 + i] * g[i];
  }
  for (int64_t i = 0; i < n; ++i) {
    ga[d0 + i] = static_cast<T>(sa[i]);
    gq[d0 + i] = static_cast<T>(sq[i]);
  }
}

// The same loops compiled for AVX-512 (float32): the compiler's vectors are 16
// floats and 8 doubles there, against SSE2's 4 and 2 in the baseline build
// (BM_EmaScan on the AMD EPYC Zen5: see BENCHMARKS.md, session 21).
BAKALLM_AVX512_WIDE void scan_forward_avx512(const float* u, const float* a, const float* q, const float* y0, float* y,
                                        int64_t B, int64_t Tn, int64_t D, int64_t d0, int64_t d1) {
  scan_forward_features(u, a, q, y0, y, B, Tn, D, d0, d1);
}
BAKALLM_AVX512_WIDE void scan_backward_avx512(const float* gy, const float* u, const float* y, const float* a,
                                         const float* q, const float* y0, float* gu, float* ga, float* gq,
                                         float* gy0, int64_t B, int64_t Tn, int64_t D, int64_t d0, int64_t d1) {
  scan_backward_features(gy, u, y, a, q, y0, gu, ga, gq, gy0, B, Tn, D, d0, d1);
}

template <typename T>
void scan_forward_cpu(const T* u, const T* a, const T* q, const T* y0, T* y, int64_t B, int64_t Tn, int64_t D) {
  at::parallel_for(0, D, feature_grain(B, Tn, D), [&](int64_t d0, int64_t d1) {
    if constexpr (std::is_same_v<T, float>)
      if (kernel_isa() == Isa::kAvx512) return scan_forward_avx512(u, a, q, y0, y, B, Tn, D, d0, d1);
    scan_forward_features(u, a, q, y0, y, B, Tn, D, d0, d1);
  });
}

template <typename T>
void scan_backward_cpu(const T* gy, const T* u, const T* y, const T* a, const T* q, const T* y0, T* gu, T* ga,
                       T* gq, T* gy0, int64_t B, int64_t Tn, int64_t D) {
  at::parallel_for(0, D, feature_grain(B, Tn, D), [&](int64_t d0, int64_t d1) {
    if constexpr (std::is_same_v<T, float>)
      if (kernel_isa() == Isa::kAvx512)
        return scan_backward_avx512(gy, u, y, a, q, y0, gu, ga, gq, gy0, B, Tn, D, d0, d1);
    scan_backward_features(gy, u, y, a, q, y0, gu, ga, gq, gy0, B, Tn, D, d0, d1);
  });
}

bool use_cpu_kernel(const Tensor& u) {
  return u.device().is_cpu() &&
         (u.scalar_type() == torch::kFloat || u.scalar_type() == torch::kDouble);
}

// Same recurrences with tensor ops, one step per time index: any device/dtype.
Tensor scan_forward_generic(const Tensor& u, const Tensor& a, const Tensor& q, const Tensor& y0) {
  auto y = torch::empty_like(u);
  auto prev = y0;  // [B, D]
  for (int64_t t = 0; t < u.size(1); ++t) {
    prev = q * prev + a * u.select(1, t);
    y.select(1, t).copy_(prev);
  }
  return y;
}

variable_list scan_backward_generic(const Tensor& gy, const Tensor& u, const Tensor& y,
                                    const Tensor& a, const Tensor& q, const Tensor& y0) {
  auto gu = torch::empty_like(u);
  auto g = torch::zeros_like(u.select(1, 0));
  auto ga = torch::zeros_like(a, torch::kFloat);
  auto gq = torch::zeros_like(q, torch::kFloat);
  for (int64_t t = u.size(1) - 1; t >= 0; --t) {
    g = gy.select(1, t) + q * g;
    gu.select(1, t).copy_(a * g);
    ga += (g * u.select(1, t)).sum(0).to(torch::kFloat);
    gq += (g * (t > 0 ? y.select(1, t - 1) : y0)).sum(0).to(torch::kFloat);
  }
  return {gu, ga.to(a.scalar_type()), gq.to(q.scalar_type()), q * g};
}

// The CPU kernel's scan of u from y0, all contiguous and of u's dtype (float or double).
Tensor scan_forward_kernel(const Tensor& u, const Tensor& a, const Tensor& q, const Tensor& y0) {
  auto y = empty_as(u);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ema_scan_forward", [&] {
    scan_forward_cpu<scalar_t>(u.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(),
                               y0.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), u.size(0), u.size(1), u.size(2));
  });
  return y;
}

class EmaScan : public torch::autograd::Function<EmaScan> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& u_in, const Tensor& alpha_in,
                        const Tensor& q_in, const Tensor& y0_in) {
    const auto u = u_in.contiguous();
    const auto a = alpha_in.to(u.scalar_type()).contiguous();
    const auto q = q_in.to(u.scalar_type()).contiguous();
    const auto y0 = y0_in.to(u.scalar_type()).contiguous();
    const auto y = use_cpu_kernel(u) ? scan_forward_kernel(u, a, q, y0) : scan_forward_generic(u, a, q, y0);
    ctx->save_for_backward({u, a, q, y, y0});
    ctx->saved_data["alpha_dtype"] = static_cast<int64_t>(alpha_in.scalar_type());
    ctx->saved_data["q_dtype"] = static_cast<int64_t>(q_in.scalar_type());
    ctx->saved_data["y0_dtype"] = static_cast<int64_t>(y0_in.scalar_type());
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& u = saved[0];
    const auto& a = saved[1];
    const auto& q = saved[2];
    const auto& y = saved[3];
    const auto& y0 = saved[4];
    const auto gy = grads[0].to(u.scalar_type()).contiguous();
    variable_list out;
    if (use_cpu_kernel(u)) {
      auto gu = torch::empty_like(u);
      auto ga = torch::empty_like(a);
      auto gq = torch::empty_like(q);
      auto gy0 = torch::empty_like(y0);
      AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ema_scan_backward", [&] {
        scan_backward_cpu<scalar_t>(gy.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                    a.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), y0.data_ptr<scalar_t>(),
                                    gu.data_ptr<scalar_t>(), ga.data_ptr<scalar_t>(), gq.data_ptr<scalar_t>(),
                                    gy0.data_ptr<scalar_t>(), u.size(0), u.size(1), u.size(2));
      });
      out = {gu, ga, gq, gy0};
    } else {
      out = scan_backward_generic(gy, u, y, a, q, y0);
    }
    auto as = [&](const Tensor& t, const char* key) {
      return t.to(static_cast<torch::ScalarType>(ctx->saved_data[key].toInt()));
    };
    return {out[0], as(out[1], "alpha_dtype"), as(out[2], "q_dtype"), as(out[3], "y0_dtype")};
  }
};

}  // namespace

torch::Tensor ema_scan(const torch::Tensor& u, const torch::Tensor& alpha, const torch::Tensor& q,
                       const torch::Tensor& y0_in) {
  BAKALLM_TRACE("ema_scan");
  TORCH_CHECK(u.dim() == 3, "ema_scan: u must be [B, T, D], got ", u.sizes());
  TORCH_CHECK(alpha.dim() == 1 && alpha.size(0) == u.size(2), "ema_scan: alpha must be [D]");
  TORCH_CHECK(q.dim() == 1 && q.size(0) == u.size(2), "ema_scan: q must be [D]");
  TORCH_CHECK(!y0_in.defined() || (y0_in.dim() == 2 && y0_in.size(0) == u.size(0) && y0_in.size(1) == u.size(2)),
              "ema_scan: y0 must be [B, D]");
  if (u.size(1) == 0) return u * alpha;  // empty time axis; keeps the graph
  const auto y0 = y0_in.defined() ? y0_in : torch::zeros({u.size(0), u.size(2)}, u.options());
  const bool grad = wants_grad(u, alpha, q, y0);
  const auto dtype = u.scalar_type();
  if (u.size(1) == 1 && !grad && use_cpu_kernel(u) && alpha.scalar_type() == dtype && q.scalar_type() == dtype &&
      y0.scalar_type() == dtype)  // a decoded token: the kernel's loop, no autograd node, one op
    return scan_forward_kernel(u.contiguous(), alpha.contiguous(), q.contiguous(), y0.contiguous());
  // One row wanting a gradient or on another device: the recurrence itself, three ops.
  if (u.size(1) == 1) return (q * y0 + alpha * u.select(1, 0)).unsqueeze(1).to(u.scalar_type());
  // Half types are scanned in float32 (the recurrence accumulates error).
  const bool widen = u.scalar_type() == torch::kBFloat16 || u.scalar_type() == torch::kHalf;
  if (widen)
    return EmaScan::apply(u.to(torch::kFloat), alpha, q, y0.to(torch::kFloat)).to(u.scalar_type());
  return EmaScan::apply(u, alpha, q, y0);
}

}  // namespace bakallm
