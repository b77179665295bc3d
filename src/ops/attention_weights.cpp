#include "ops/attention_weights.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "ops/autograd.h"
#include "ops/dropout.h"
#include "ops/matmul.h"
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
  // Rows in parallel, each with its dropout multipliers (null when none)
  // and, with ROW_FLOATS, a row of Tk floats (E; else null), both buffers
  // of the thread's.
  template <class F>
  void each(const F& f, bool row_floats = false) const {
    at::parallel_for(0, G * Tq, std::max<int64_t>(1, 4096 / std::max<int64_t>(Tk, 1)), [&](int64_t r0, int64_t r1) {
      std::vector<float> mult(drops() ? Tk : 0), e(row_floats ? Tk : 0);
      for (int64_t r = r0; r < r1; ++r) {
        if (drops()) dropout_multipliers(seed, o.dropout, first + r * Tk, Tk, mult.data());
        f(r, drops() ? mult.data() : nullptr, row_floats ? e.data() : nullptr);
      }
    });
  }
};

// A float32 tensor's elements as float, a bfloat16 one's as their bits.
template <class T>
T* elements(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}
// F(elements) with T's elements as float or as bfloat16 bits (uint16_t).
template <class F>
void on_elements(const Tensor& t, const F& f) {
  if (t.scalar_type() == torch::kBFloat16)
    f(static_cast<const uint16_t*>(t.data_ptr()));
  else
    f(t.data_ptr<float>());
}
void fill_nan(float* p, int64_t n) { std::fill(p, p + n, std::numeric_limits<float>::quiet_NaN()); }
void fill_nan(uint16_t* p, int64_t n) { std::fill(p, p + n, bfloat16_bits(std::numeric_limits<float>::quiet_NaN())); }

class AttentionWeights : public torch::autograd::Function<AttentionWeights> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& scores, const AttentionMask& mask,
                        const AttentionWeightsOptions& options) {
    Rows rows(scores, mask, options);
    if (rows.drops()) rows.seed = draw_dropout_seed();
    auto p = torch::empty_like(scores), w = rows.drops() ? torch::empty_like(scores) : p;
    const int64_t Tk = rows.Tk;
    const auto isa = kernel_isa();
    const float scale = static_cast<float>(options.scale);
    on_elements(scores, [&](auto* x) {
      using T = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
      constexpr bool in_place = std::is_same_v<T, float>;  // the exponentials in P itself
      T *pp = elements<T>(p), *pw = elements<T>(w);
      const auto row = [&](int64_t r, const float* mult, float* e) {
        const int64_t lo = rows.lo(r), hi = rows.hi(r), at = r * Tk;
        if (lo >= hi) {  // nothing visible: softmax of -inf alone
          fill_nan(pp + at, Tk);
          fill_nan(pw + at, Tk);
          return;
        }
        float* exps = in_place ? reinterpret_cast<float*>(pp + at) : e;
        BAKALLM_ON_ISA(isa, weights_row(x + at, Tk, lo, hi, scale, mult, exps, pp + at, pw + at));
      };
      rows.each(row, /*row_floats=*/!in_place);
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
    const auto dw = grads[0].to(p.scalar_type()).contiguous();
    auto ds = torch::empty_like(p);
    const int64_t Tk = rows.Tk;
    const auto isa = kernel_isa();
    const float scale = static_cast<float>(o.scale);
    on_elements(p, [&](auto* pp) {
      using T = std::remove_const_t<std::remove_pointer_t<decltype(pp)>>;
      const T* pdw = elements<T>(dw);
      T* pds = elements<T>(ds);
      rows.each([&](int64_t r, const float* mult, float*) {
        const int64_t lo = rows.lo(r), hi = rows.hi(r), at = r * Tk;
        if (lo >= hi) {
          fill_nan(pds + at, Tk);
          return;
        }
        BAKALLM_ON_ISA(isa, weights_row_backward(pdw + at, pp + at, Tk, lo, hi, scale, mult, pds + at));
      });
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
  if (!scores.device().is_cpu() || !(scores.scalar_type() == torch::kFloat || scores.scalar_type() == torch::kBFloat16) ||
      !scores.is_contiguous() || scores.numel() == 0)
    return weights_by_ops(scores, mask, o);
  return AttentionWeights::apply(scores, mask, o);
}

Tensor dense_attention(const Tensor& q, const Tensor& K, const Tensor& V, const AttentionMask& mask,
                       const AttentionWeightsOptions& o, torch::ScalarType compute) {
  const auto scores = matmul_nt(q, K, compute, {}, inner_dtype(q, compute));  // [..., Tq, Tk]
  const auto weights = attention_weights(scores.flatten(0, -3), mask, o).view(scores.sizes());
  return matmul_nt(weights, V.transpose(-2, -1), compute, {}, q.scalar_type());  // [..., Tq, Dv]
}

}  // namespace bakallm
