#include "ops/cross_entropy.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "ops/autograd.h"
#include "ops/avx512.h"
#include "ops/cpu.h"
#include "ops/exp_row.h"
#include "ops/matmul.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per chunk of rows: logits, log-sum-exp, the loss terms and, when a gradient
// will be wanted, d(mean loss)/d(logits) = (softmax - onehot) / count turned
// straight into dh and dW (as llm.c's fused classifier does): the backward
// only scales them by the incoming gradient, so the head's logits are
// computed once per step, never recomputed.
class FusedHeadLoss : public torch::autograd::Function<FusedHeadLoss> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& h, const Tensor& W, const Tensor& W_compute,
                        const Tensor& targets, int64_t compute_dtype, int64_t chunk, bool grads) {
    const auto compute = static_cast<torch::ScalarType>(compute_dtype);
    // W in the products' dtype once, not in each product: W_compute (W's kept
    // cast, or W itself) when it is, else a cast now.
    const auto wanted = product_dtype(h.scalar_type(), compute);
    const auto Wc = W_compute.scalar_type() == wanted ? W_compute : W.to(wanted);
    const int64_t N = h.size(0);
    const auto valid = targets.ne(kIgnoreIndex);                        // [N]
    const auto count = valid.sum().item<int64_t>();
    // for a unit upstream gradient; dW: the first chunk's product, each later
    // one added inside its own (matmul_nt_add)
    Tensor dh, dW;
    if (grads) dh = torch::zeros_like(h);                               // [N, D]
    auto total = torch::zeros({}, h.options().dtype(torch::kDouble));
    for (int64_t r = 0; r < N && count > 0; r += chunk) {
      const int64_t n = std::min(chunk, N - r);
      auto hc = h.narrow(0, r, n);
      auto t = targets.narrow(0, r, n);
      auto ok = valid.narrow(0, r, n).to(torch::kFloat);                // [n]
      const auto index = t.clamp_min(0).unsqueeze(1);                  // [n, 1]
      auto logits = matmul_nt(hc, Wc, compute).to(torch::kFloat);        // [n, V]
      auto picked = logits.gather(1, index);                            // [n, 1]
      Tensor m, sum, pc;                                                // [n, 1], [n, 1], [n, V]
      if (grads) {
        // dloss/dlogits = (softmax - onehot) · ok / count, in the products' dtype once for both products
        const auto weight = (ok / static_cast<double>(count)).unsqueeze(1);  // [n, 1]
        std::tie(m, sum, pc) = softmax_gradient_(logits, weight, index, product_dtype(logits.scalar_type(), compute));
      } else {
        std::tie(m, sum) = exp_rows_(logits);
      }
      auto lse = sum.log() + m;                                         // [n, 1]
      total += ((lse - picked).squeeze(1) * ok).sum().to(torch::kDouble);
      if (!grads) continue;
      dh.narrow(0, r, n).copy_(matmul_nt(pc, Wc.t(), compute, {}, h.scalar_type()));  // [n, D] = p · W
      if (dW.defined())
        matmul_nt_add(dW, pc.t(), hc.t(), compute);                                    // [V, D] += pᵀ · h
      else
        dW = matmul_nt(pc.t(), hc.t(), compute, {}, W.scalar_type());                  // [V, D] = pᵀ · h
    }
    if (grads && !dW.defined()) dW = torch::zeros_like(W);              // no counted row: no gradient
    ctx->save_for_backward({dh, dW});
    return (count > 0 ? total / static_cast<double>(count) : total).to(h.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto upstream = grads[0].to(torch::kFloat);
    auto scaled = [&](const Tensor& g) { return g.defined() ? g * upstream.to(g.scalar_type()) : g; };
    return {scaled(saved[0]), scaled(saved[1]), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

namespace {

// Whether X's rows run the row kernels: contiguous float32 on a CPU with AVX-512.
bool row_kernels(const Tensor& x) {
  return x.device().is_cpu() && x.scalar_type() == torch::kFloat && x.is_contiguous() && cpu_has_avx512();
}

// Each row r of X [n, V] (row_kernels'): exp_row_ (its max m, x := exp(x − m)
// in place, their sum), then THEN(r, row, sum) while the row is in cache;
// rows split between threads.                          -> {m, sum} [n, 1] each
template <typename Then>
std::pair<Tensor, Tensor> exp_rows_then(Tensor& x, const Then& then) {
  const int64_t n = x.size(0), V = x.size(1);
  auto m = torch::empty({n, 1}, x.options()), sum = torch::empty({n, 1}, x.options());
  float *px = x.data_ptr<float>(), *pm = m.data_ptr<float>(), *ps = sum.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      std::tie(pm[r], ps[r]) = exp_row_(px + r * V, V);
      then(r, px + r * V, ps[r]);
    }
  });
  return {m, sum};
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> exp_rows_(torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 2, "exp_rows_: x must be [n, V]");
  if (!row_kernels(x)) {
    auto m = std::get<0>(x.max(1, true));  // [n, 1]
    x.sub_(m).exp_();
    return {m, x.sum(1, true)};
  }
  return exp_rows_then(x, [](int64_t, const float*, float) {});
}

namespace {

// One row of softmax_gradient_ from its exponentials E and their sum: V
// values of E scaled by W / SUM into OUT (float or bfloat16 bits; a float OUT
// may be E), less W at T.
template <typename Out>
BAKALLM_AVX512 void softmax_gradient_row(const float* e, int64_t V, float sum, float w, int64_t t, Out* out) {
  const float s = w / sum;
  const float at_target = e[t] * s - w;  // before an OUT that is E changes
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t j = 0; j < V; j += 16) {
    const __mmask16 k = lanes(j, V);
    store16(out + j, k, _mm512_mul_ps(load16(e + j, k), vs));
  }
  store16(out + t, 1, _mm512_set1_ps(at_target));
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> softmax_gradient_(torch::Tensor& x, const torch::Tensor& w,
                                                                          const torch::Tensor& index,
                                                                          torch::ScalarType dtype) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && w.size(1) == 1 && w.sizes() == index.sizes() && index.size(0) == x.size(0),
              "softmax_gradient_: x [n, V], w and index [n, 1]");
  if (!(row_kernels(x) && (dtype == torch::kFloat || dtype == torch::kBFloat16))) {
    // scatter_add_ checks the targets itself
    auto [m, sum] = exp_rows_(x);
    x.mul_(w / sum);
    x.scatter_add_(1, index, -w);
    return {m, sum, x.to(dtype)};
  }
  const int64_t n = x.size(0), V = x.size(1);
  const auto t = index.to(torch::kLong).contiguous();
  const int64_t* pt = t.data_ptr<int64_t>();
  for (int64_t r = 0; r < n; ++r)
    TORCH_CHECK(pt[r] >= 0 && pt[r] < V, "softmax_gradient_: target ", pt[r], " outside [0, ", V, ")");
  auto out = dtype == torch::kFloat ? x : torch::empty({n, V}, x.options().dtype(dtype));
  const auto wf = w.to(torch::kFloat).contiguous();
  const float* pw = wf.data_ptr<float>();
  void* po = out.data_ptr();
  // exp in place, then the gradient while the row is in cache (bfloat16:
  // exponentials in a scratch row, X left unchanged, measured no faster)
  auto [m, sum] = exp_rows_then(x, [&](int64_t r, const float* e, float s) {
    if (dtype == torch::kFloat)
      softmax_gradient_row(e, V, s, pw[r], pt[r], static_cast<float*>(po) + r * V);
    else
      softmax_gradient_row(e, V, s, pw[r], pt[r], static_cast<uint16_t*>(po) + r * V);
  });
  return {m, sum, out};
}

torch::Tensor cross_entropy_rows(const torch::Tensor& logits, const torch::Tensor& targets) {
  namespace F = torch::nn::functional;
  const auto wide = logits.scalar_type() == torch::kDouble ? logits : logits.to(torch::kFloat);
  return F::cross_entropy(wide, targets,
                          F::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(kIgnoreIndex));
}

torch::Tensor fused_head_loss(const torch::Tensor& h, const torch::Tensor& W, const torch::Tensor& targets,
                              torch::ScalarType compute, int64_t rows_per_chunk, const torch::Tensor& W_compute) {
  TORCH_CHECK(h.dim() == 2 && W.dim() == 2 && h.size(1) == W.size(1), "fused_head_loss: h [N, D], W [V, D]");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == h.size(0), "fused_head_loss: targets [N]");
  // Inside apply() grad mode is off: decide here whether a backward will come.
  const bool grads = wants_grad(h, W);
  // apply() takes no undefined tensor: W stands for a missing W_COMPUTE.
  return FusedHeadLoss::apply(h, W, W_compute.defined() ? W_compute : W, targets, static_cast<int64_t>(compute),
                              rows_per_chunk, grads);
}

}  // namespace bakallm
