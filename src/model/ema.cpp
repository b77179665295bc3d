#include "model/ema.h"

#include <ATen/Parallel.h>

#include <vector>

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kFeatureBlock = 16;  // features per parallel task

// y[b,t,d] = q[d] * y[b,t-1,d] + a[d] * u[b,t,d]
template <typename T>
void scan_forward_cpu(const T* u, const T* a, const T* q, T* y, int64_t B, int64_t Tn, int64_t D) {
  at::parallel_for(0, D, kFeatureBlock, [&](int64_t d0, int64_t d1) {
    for (int64_t b = 0; b < B; ++b) {
      const T* ub = u + b * Tn * D;
      T* yb = y + b * Tn * D;
      for (int64_t d = d0; d < d1; ++d) yb[d] = a[d] * ub[d];
      for (int64_t t = 1; t < Tn; ++t) {
        const T* ut = ub + t * D;
        const T* yp = yb + (t - 1) * D;
        T* yt = yb + t * D;
        for (int64_t d = d0; d < d1; ++d) yt[d] = q[d] * yp[d] + a[d] * ut[d];
      }
    }
  });
}

template <typename T>
void scan_backward_cpu(const T* gy, const T* u, const T* y, const T* a, const T* q, T* gu, T* ga,
                       T* gq, int64_t B, int64_t Tn, int64_t D) {
  at::parallel_for(0, D, kFeatureBlock, [&](int64_t d0, int64_t d1) {
    const int64_t n = d1 - d0;
    std::vector<T> g(n);                  // running g_{t+1}
    std::vector<double> sa(n, 0.0), sq(n, 0.0);
    for (int64_t b = 0; b < B; ++b) {
      std::fill(g.begin(), g.end(), T(0));
      const int64_t base = b * Tn * D;
      for (int64_t t = Tn - 1; t >= 0; --t) {
        const int64_t row = base + t * D;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t d = d0 + i;
          const T gt = gy[row + d] + q[d] * g[i];
          g[i] = gt;
          gu[row + d] = a[d] * gt;
          sa[i] += static_cast<double>(gt) * u[row + d];
          if (t > 0) sq[i] += static_cast<double>(gt) * y[row - D + d];
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      ga[d0 + i] = static_cast<T>(sa[i]);
      gq[d0 + i] = static_cast<T>(sq[i]);
    }
  });
}

bool use_cpu_kernel(const Tensor& u) {
  return u.device().is_cpu() &&
         (u.scalar_type() == torch::kFloat || u.scalar_type() == torch::kDouble);
}

// Same recurrences with tensor ops, one step per time index: any device/dtype.
Tensor scan_forward_generic(const Tensor& u, const Tensor& a, const Tensor& q) {
  auto y = torch::empty_like(u);
  auto prev = torch::zeros_like(u.select(1, 0));  // [B, D]
  for (int64_t t = 0; t < u.size(1); ++t) {
    prev = q * prev + a * u.select(1, t);
    y.select(1, t).copy_(prev);
  }
  return y;
}

variable_list scan_backward_generic(const Tensor& gy, const Tensor& u, const Tensor& y,
                                    const Tensor& a, const Tensor& q) {
  auto gu = torch::empty_like(u);
  auto g = torch::zeros_like(u.select(1, 0));
  auto ga = torch::zeros_like(a, torch::kFloat);
  auto gq = torch::zeros_like(q, torch::kFloat);
  for (int64_t t = u.size(1) - 1; t >= 0; --t) {
    g = gy.select(1, t) + q * g;
    gu.select(1, t).copy_(a * g);
    ga += (g * u.select(1, t)).sum(0).to(torch::kFloat);
    if (t > 0) gq += (g * y.select(1, t - 1)).sum(0).to(torch::kFloat);
  }
  return {gu, ga.to(a.scalar_type()), gq.to(q.scalar_type())};
}

class EmaScan : public torch::autograd::Function<EmaScan> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& u_in, const Tensor& alpha_in,
                        const Tensor& q_in) {
    const auto u = u_in.contiguous();
    const auto a = alpha_in.to(u.scalar_type()).contiguous();
    const auto q = q_in.to(u.scalar_type()).contiguous();
    Tensor y;
    if (use_cpu_kernel(u)) {
      y = torch::empty_like(u);
      AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ema_scan_forward", [&] {
        scan_forward_cpu<scalar_t>(u.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                                   q.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), u.size(0),
                                   u.size(1), u.size(2));
      });
    } else {
      y = scan_forward_generic(u, a, q);
    }
    ctx->save_for_backward({u, a, q, y});
    ctx->saved_data["alpha_dtype"] = static_cast<int64_t>(alpha_in.scalar_type());
    ctx->saved_data["q_dtype"] = static_cast<int64_t>(q_in.scalar_type());
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& u = saved[0];
    const auto& a = saved[1];
    const auto& q = saved[2];
    const auto& y = saved[3];
    const auto gy = grads[0].to(u.scalar_type()).contiguous();
    variable_list out;
    if (use_cpu_kernel(u)) {
      auto gu = torch::empty_like(u);
      auto ga = torch::empty_like(a);
      auto gq = torch::empty_like(q);
      AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ema_scan_backward", [&] {
        scan_backward_cpu<scalar_t>(gy.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                                    y.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(),
                                    q.data_ptr<scalar_t>(), gu.data_ptr<scalar_t>(),
                                    ga.data_ptr<scalar_t>(), gq.data_ptr<scalar_t>(), u.size(0),
                                    u.size(1), u.size(2));
      });
      out = {gu, ga, gq};
    } else {
      out = scan_backward_generic(gy, u, y, a, q);
    }
    const auto a_dtype = static_cast<torch::ScalarType>(ctx->saved_data["alpha_dtype"].toInt());
    const auto q_dtype = static_cast<torch::ScalarType>(ctx->saved_data["q_dtype"].toInt());
    return {out[0], out[1].to(a_dtype), out[2].to(q_dtype)};
  }
};

}  // namespace

torch::Tensor ema_scan(const torch::Tensor& u, const torch::Tensor& alpha, const torch::Tensor& q) {
  TORCH_CHECK(u.dim() == 3, "ema_scan: u must be [B, T, D], got ", u.sizes());
  TORCH_CHECK(alpha.dim() == 1 && alpha.size(0) == u.size(2), "ema_scan: alpha must be [D]");
  TORCH_CHECK(q.dim() == 1 && q.size(0) == u.size(2), "ema_scan: q must be [D]");
  if (u.size(1) == 0) return u * alpha;  // empty time axis; keeps the graph
  // Half types are scanned in float32 (the recurrence accumulates error).
  const bool widen = u.scalar_type() == torch::kBFloat16 || u.scalar_type() == torch::kHalf;
  if (widen)
    return EmaScan::apply(u.to(torch::kFloat), alpha, q).to(u.scalar_type());
  return EmaScan::apply(u, alpha, q);
}

}  // namespace bakallm
