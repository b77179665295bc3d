#include "ops/attention_weights.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/autograd.h"
#include "ops/dropout.h"
#include "ops/simd.h"
#include "ops/trace.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

#define BAKALLM_SIMD_LOOPS "ops/attention_weights_loops.inc"
#include "ops/simd_targets.inc"

// One call's rows: which keys each sees, and its dropout.
struct Rows {
  int64_t G = 0, Tq = 0, Tk = 0;
  AttentionMask mask;
  std::vector<uint8_t> keep_past;  // mask.keep_past on the CPU, or empty
  AttentionWeightsOptions o;
  uint64_t seed = 0;
  int64_t first = 0;  // this process's first element of the whole batch's weights (data parallel)

  Rows(const Tensor& s, const AttentionMask& m, const AttentionWeightsOptions& options)
      : G(s.size(0)), Tq(s.size(1)), Tk(s.size(2)), mask(m), o(options) {
    if (m.keep_past.defined()) {
      const auto k = m.keep_past.to(torch::kCPU, torch::kBool).contiguous();
      TORCH_CHECK(k.numel() == G, "attention_weights: keep_past has ", k.numel(), " entries for ", G, " matrices");
      keep_past.assign(k.data_ptr<bool>(), k.data_ptr<bool>() + G);
    }
    TORCH_CHECK(o.batch > 0 && G % o.batch == 0, "attention_weights: ", G, " matrices in a batch of ", o.batch);
    first = dropout_first_element(G / o.batch * Tq * Tk);
  }
  bool drops() const { return o.training && o.dropout > 0.0; }
  // Row r = g·Tq + i sees keys [lo, hi).
  int64_t lo(int64_t r) const {
    return !keep_past.empty() && !keep_past[r / Tq] ? std::min(mask.past, Tk) : 0;
  }
  int64_t hi(int64_t r) const { return mask.causal ? std::clamp<int64_t>(mask.before + r % Tq + 1, 0, Tk) : Tk; }
  // Rows in parallel, each with its dropout multipliers (null when none) in a buffer of the thread's.
  template <class F>
  void each(const F& f) const {
    at::parallel_for(0, G * Tq, std::max<int64_t>(1, 4096 / std::max<int64_t>(Tk, 1)), [&](int64_t r0, int64_t r1) {
      std::vector<float> mult(drops() ? Tk : 0);
      for (int64_t r = r0; r < r1; ++r) {
        if (drops()) dropout_multipliers(seed, o.dropout, first + r * Tk, Tk, mult.data());
        f(r, drops() ? mult.data() : nullptr);
      }
    });
  }
};

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

class AttentionWeights : public torch::autograd::Function<AttentionWeights> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& scores, const AttentionMask& mask,
                        const AttentionWeightsOptions& options) {
    Rows rows(scores, mask, options);
    if (rows.drops()) rows.seed = draw_dropout_seed();
    auto p = torch::empty_like(scores), w = rows.drops() ? torch::empty_like(scores) : p;
    const float* x = scores.data_ptr<float>();
    float *pp = p.data_ptr<float>(), *pw = w.data_ptr<float>();
    const int64_t Tk = rows.Tk;
    const auto isa = kernel_isa();
    const float scale = static_cast<float>(options.scale);
    rows.each([&](int64_t r, const float* mult) {
      const int64_t lo = rows.lo(r), hi = rows.hi(r), at = r * Tk;
      if (lo >= hi) {  // nothing visible: softmax of -inf alone
        std::fill(pp + at, pp + at + Tk, kNaN);
        std::fill(pw + at, pw + at + Tk, kNaN);
        return;
      }
      BAKALLM_ON_ISA(isa, weights_row(x + at, Tk, lo, hi, scale, mult, pp + at, pw + at));
    });
    ctx->save_for_backward({p});
    save_weighting(mask, options, ctx);
    auto& d = ctx->saved_data;
    d["seed"] = static_cast<int64_t>(rows.seed);
    d["first"] = rows.first;
    return w;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto p = ctx->get_saved_variables()[0];
    auto& d = ctx->saved_data;
    const auto [mask, o] = saved_weighting(ctx);
    Rows rows(p, mask, o);
    rows.seed = static_cast<uint64_t>(d["seed"].toInt());
    rows.first = d["first"].toInt();  // as the forward drew it
    const auto dw = grads[0].to(torch::kFloat).contiguous();
    auto ds = torch::empty_like(p);
    const float *pdw = dw.data_ptr<float>(), *pp = p.data_ptr<float>();
    float* pds = ds.data_ptr<float>();
    const int64_t Tk = rows.Tk;
    const auto isa = kernel_isa();
    const float scale = static_cast<float>(o.scale);
    rows.each([&](int64_t r, const float* mult) {
      const int64_t lo = rows.lo(r), hi = rows.hi(r), at = r * Tk;
      if (lo >= hi) {
        std::fill(pds + at, pds + at + Tk, kNaN);
        return;
      }
      BAKALLM_ON_ISA(isa, weights_row_backward(pdw + at, pp + at, Tk, lo, hi, scale, mult, pds + at));
    });
    return {ds, Tensor(), Tensor()};
  }
};

// The same in libtorch ops, for devices and dtypes the kernels do not take.
Tensor weights_by_ops(const Tensor& scores, const AttentionMask& mask, const AttentionWeightsOptions& o) {
  const int64_t G = scores.size(0), Tq = scores.size(1), Tk = scores.size(2);
  auto s = scores * o.scale;
  const auto seen = visible_keys(mask, 0, Tq, 0, Tk, scores.device());  // [Tq, Tk], [G, 1|Tq, Tk] or undefined
  if (seen.defined()) s = s.masked_fill(seen.logical_not(), -std::numeric_limits<float>::infinity());
  const auto w = torch::softmax(s, -1, s.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat);
  // dim 0 of what hashed_dropout drops is the batch (its data-parallel offset)
  return hashed_dropout(w.view({o.batch, G / o.batch, Tq, Tk}), o.dropout, o.training).view({G, Tq, Tk});
}

}  // namespace

Tensor attention_weights(const Tensor& scores, const AttentionMask& mask, const AttentionWeightsOptions& o) {
  BAKALLM_TRACE("attention_weights");
  TORCH_CHECK(scores.dim() == 3, "attention_weights: scores must be [G, Tq, Tk], got ", scores.sizes());
  TORCH_CHECK(o.batch > 0 && scores.size(0) % o.batch == 0, "attention_weights: ", scores.size(0),
              " matrices in a batch of ", o.batch);
  if (!scores.device().is_cpu() || scores.scalar_type() != torch::kFloat || !scores.is_contiguous() ||
      scores.numel() == 0)
    return weights_by_ops(scores, mask, o);
  return AttentionWeights::apply(scores, mask, o);
}

}  // namespace bakallm
