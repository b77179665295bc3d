#include "ops/gate.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "ops/autograd.h"
#include "ops/avx512.h"
#include "ops/cpu.h"
#include "ops/fast_tensor.h"
#include "ops/simd.h"
#include "ops/trace.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 16384;  // values per task: a decoded row runs on the calling thread

// The pointers of one elementwise pass; null where an operand is absent.
// Values of type A (a and its gradient), Z (b and its gradient) and C (the
// base and the output, or the output's gradient), each float or
// c10::BFloat16: computed in float32, each bfloat16 result rounded once.
template <typename A, typename Z, typename C>
struct Pass {
  const A* a = nullptr;  // x or u
  const Z* b = nullptr;  // z or g
  const C* c = nullptr;  // base (forward) or dy (backward)
  C* y = nullptr;        // the output (forward)
  A* da = nullptr;       // dx / du (backward)
  Z* db = nullptr;       // dz / dg (backward)
};

// σ(z) = 1 / (1 + exp(−z)), as torch.sigmoid computes it.
inline float sigmoid1(float z) { return 1.0f / (1.0f + std::exp(-z)); }

BAKALLM_AVX512 inline __m512 sigmoid16(__m512 z) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), z))));
}

// The four loops, each over values [0, n) of P (offset by the caller).
enum class Loop { kSigmoidForward, kSigmoidBackward, kReluForward, kReluBackward };

// 16 bfloat16 values (the lanes of K) as float32, and back, beside
// ops/avx512.h's float32 ones (which these would otherwise hide).
using bakallm::load16;
using bakallm::store16;
BAKALLM_AVX512 inline __m512 load16(const c10::BFloat16* p, __mmask16 k) {
  return widen_bfloat16(reinterpret_cast<const uint16_t*>(p), k);
}
BAKALLM_AVX512 inline void store16(c10::BFloat16* p, __mmask16 k, __m512 v) {
  store16(reinterpret_cast<uint16_t*>(p), k, v);
}

template <typename A, typename Z, typename C>
BAKALLM_AVX512 void run_avx512(Loop loop, const Pass<A, Z, C>& p, int64_t n) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = lanes(i, n);
    const __m512 a = load16(p.a + i, k), b = load16(p.b + i, k);
    switch (loop) {
      case Loop::kSigmoidForward: {
        __m512 y = _mm512_mul_ps(a, sigmoid16(b));
        if (p.c) y = _mm512_add_ps(load16(p.c + i, k), y);
        store16(p.y + i, k, y);
        break;
      }
      case Loop::kSigmoidBackward: {
        const __m512 dy = load16(p.c + i, k), s = sigmoid16(b);
        store16(p.da + i, k, _mm512_mul_ps(dy, s));
        store16(p.db + i, k, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dy, a), _mm512_sub_ps(one, s)), s));
        break;
      }
      case Loop::kReluForward: store16(p.y + i, k, _mm512_mul_ps(a, _mm512_max_ps(b, zero))); break;
      case Loop::kReluBackward: {
        const __m512 dy = load16(p.c + i, k);
        store16(p.da + i, k, _mm512_mul_ps(dy, _mm512_max_ps(b, zero)));
        const __mmask16 positive = _mm512_cmp_ps_mask(b, zero, _CMP_GT_OQ);
        store16(p.db + i, k, _mm512_maskz_mul_ps(positive, dy, a));
        break;
      }
    }
  }
}

template <typename A, typename Z, typename C>
void run_portable(Loop loop, const Pass<A, Z, C>& p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float a = p.a[i], b = p.b[i];
    switch (loop) {
      case Loop::kSigmoidForward: p.y[i] = (p.c ? static_cast<float>(p.c[i]) : 0.0f) + a * sigmoid1(b); break;
      case Loop::kSigmoidBackward: {
        const float s = sigmoid1(b), dy = p.c[i];
        p.da[i] = dy * s;
        p.db[i] = dy * a * (1.0f - s) * s;
        break;
      }
      case Loop::kReluForward: p.y[i] = a * std::max(b, 0.0f); break;
      case Loop::kReluBackward: {
        const float dy = p.c[i];
        p.da[i] = dy * std::max(b, 0.0f);
        p.db[i] = b > 0.0f ? dy * a : 0.0f;
        break;
      }
    }
  }
}

// The four loops on float32 operands with AVX2 (8 lanes), the last n % 8
// values by the portable loop. Decoding's gates on an AVX2 machine (tiny: four
// a layer, 320 or 1280 values each) had run the portable loop alone.
BAKALLM_AVX2 inline __m256 sigmoid8(__m256 z) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, _ZGVdN8v_expf(_mm256_sub_ps(_mm256_setzero_ps(), z))));
}

using Float32Pass = Pass<float, float, float>;

BAKALLM_AVX2 void run_avx2(Loop loop, const Float32Pass& p, int64_t n) {
  const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
  const int64_t whole = n / 8 * 8;
  for (int64_t i = 0; i < whole; i += 8) {
    const __m256 a = _mm256_loadu_ps(p.a + i), b = _mm256_loadu_ps(p.b + i);
    switch (loop) {
      case Loop::kSigmoidForward: {
        __m256 y = _mm256_mul_ps(a, sigmoid8(b));
        if (p.c) y = _mm256_add_ps(_mm256_loadu_ps(p.c + i), y);
        _mm256_storeu_ps(p.y + i, y);
        break;
      }
      case Loop::kSigmoidBackward: {
        const __m256 dy = _mm256_loadu_ps(p.c + i), s = sigmoid8(b);
        _mm256_storeu_ps(p.da + i, _mm256_mul_ps(dy, s));
        _mm256_storeu_ps(p.db + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dy, a), _mm256_sub_ps(one, s)), s));
        break;
      }
      case Loop::kReluForward: _mm256_storeu_ps(p.y + i, _mm256_mul_ps(a, _mm256_max_ps(b, zero))); break;
      case Loop::kReluBackward: {
        const __m256 dy = _mm256_loadu_ps(p.c + i);
        _mm256_storeu_ps(p.da + i, _mm256_mul_ps(dy, _mm256_max_ps(b, zero)));
        _mm256_storeu_ps(p.db + i, _mm256_and_ps(_mm256_cmp_ps(b, zero, _CMP_GT_OQ), _mm256_mul_ps(dy, a)));
        break;
      }
    }
  }
  auto at = [&](auto* q) { return q ? q + whole : nullptr; };
  run_portable(loop, Float32Pass{at(p.a), at(p.b), at(p.c), at(p.y), at(p.da), at(p.db)}, n - whole);
}

// LOOP over every value of P's n, split between threads.
template <typename A, typename Z, typename C>
void run(Loop loop, const Pass<A, Z, C>& p, int64_t n) {
  const Isa isa = kernel_isa();  // AVX2: float32 operands only; bfloat16 ones run the portable loop
  at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    auto at = [&](auto* q) { return q ? q + i0 : nullptr; };
    const Pass<A, Z, C> part{at(p.a), at(p.b), at(p.c), at(p.y), at(p.da), at(p.db)};
    if (isa == Isa::kAvx512) run_avx512(loop, part, i1 - i0);
    else if constexpr (std::is_same_v<Pass<A, Z, C>, Float32Pass>)
      isa == Isa::kAvx2 ? run_avx2(loop, part, i1 - i0) : run_portable(loop, part, i1 - i0);
    else run_portable(loop, part, i1 - i0);
  });
}

template <typename T>
T* values(const Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

bool is_bfloat16(const Tensor& t) { return t.scalar_type() == torch::kBFloat16; }

// F(A{}, Z{}, C{}) with the element types of a's, b's and C_DTYPE (the
// base's or output's, the output gradient's) dtypes: all float32, b in
// bfloat16, all bfloat16, or a and b in bfloat16 with C float32 (fused()).
template <typename F>
void with_types(const Tensor& a, const Tensor& b, torch::ScalarType c_dtype, F f) {
  const bool c16 = c_dtype == torch::kBFloat16;
  if (is_bfloat16(a) && c16) f(c10::BFloat16{}, c10::BFloat16{}, c10::BFloat16{});
  else if (is_bfloat16(a)) f(c10::BFloat16{}, c10::BFloat16{}, float{});
  else if (is_bfloat16(b)) f(float{}, c10::BFloat16{}, float{});
  else f(float{}, float{}, float{});
}

// y = LOOP's forward of a (x or u), b (z or g) and c (base or none), in the
// base's dtype, or a's without one.
Tensor forward_cpu(Loop loop, const Tensor& a_in, const Tensor& b_in, const Tensor& c_in) {
  const auto a = a_in.contiguous(), b = b_in.contiguous(), c = c_in.defined() ? c_in.contiguous() : Tensor();
  auto y = empty_as(c.defined() ? c : a);
  with_types(a, b, y.scalar_type(), [&](auto ta, auto tb, auto tc) {
    using A = decltype(ta);
    using Z = decltype(tb);
    using C = decltype(tc);
    run(loop, Pass<A, Z, C>{values<A>(a), values<Z>(b), values<C>(c), values<C>(y)}, a.numel());
  });
  return y;
}

// {da, db} of LOOP's backward given dy (in the forward's output dtype), each in its input's dtype.
std::pair<Tensor, Tensor> backward_cpu(Loop loop, const Tensor& a_in, const Tensor& b_in, const Tensor& dy_in,
                                       torch::ScalarType y_dtype) {
  const auto a = a_in.contiguous(), b = b_in.contiguous();
  auto dy = dy_in.to(y_dtype);
  if (!dy.is_contiguous() && !slices_apart(dy)) dy = dy.contiguous();
  auto da = torch::empty_like(a), db = torch::empty_like(b);
  // dy's slices one at a time where they lie apart (the past keys' and
  // values' gates get a narrow of the cat's gradient), else all as one
  const int64_t slices = dy.is_contiguous() ? 1 : dy.size(0), n = a.numel() / slices;
  const int64_t dy_stride = dy.is_contiguous() ? n : dy.stride(0);
  with_types(a, b, y_dtype, [&](auto ta, auto tb, auto tc) {
    using A = decltype(ta);
    using Z = decltype(tb);
    using C = decltype(tc);
    for (int64_t g = 0; g < slices; ++g)
      run(loop,
          Pass<A, Z, C>{values<A>(a) + g * n, values<Z>(b) + g * n, values<C>(dy) + g * dy_stride, nullptr,
                        values<A>(da) + g * n, values<Z>(db) + g * n},
          n);
  });
  return {da, db};
}

// Whether the loops take these operands: CPU tensors of one shape, float32
// or bfloat16; b may be bfloat16 beside a float32 a where B_ALONE, and c
// (the base) float32 beside a bfloat16 a and b (a product's bfloat16 output
// gated onto the float32 residual stream); else all one dtype.
bool fused(const Tensor& a, const Tensor& b, const Tensor& c, bool b_alone) {
  const auto dtype = a.scalar_type();
  auto plain = [&](const Tensor& t, torch::ScalarType also) {  // a's dtype or ALSO
    return t.device().is_cpu() && t.sizes() == a.sizes() && (t.scalar_type() == dtype || t.scalar_type() == also);
  };
  const auto base_also = is_bfloat16(a) && is_bfloat16(b) ? torch::kFloat : dtype;
  return (dtype == torch::kFloat || dtype == torch::kBFloat16) && plain(a, dtype) &&
         plain(b, b_alone ? torch::kBFloat16 : dtype) && (!c.defined() || plain(c, base_also));
}

// x ⊙ σ(z), with or without a base added (BASED: the third input).
template <bool Based>
class SigmoidGate : public torch::autograd::Function<SigmoidGate<Based>> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& z, const Tensor& base) {
    ctx->save_for_backward({x, z});
    auto y = forward_cpu(Loop::kSigmoidForward, x, z, Based ? base : Tensor());
    ctx->saved_data["y_dtype"] = static_cast<int64_t>(y.scalar_type());
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto y_dtype = static_cast<torch::ScalarType>(ctx->saved_data["y_dtype"].toInt());
    auto [dx, dz] = backward_cpu(Loop::kSigmoidBackward, saved[0], saved[1], grads[0], y_dtype);
    return {dx, dz, Based ? grads[0] : Tensor()};
  }
};

class ReluGate : public torch::autograd::Function<ReluGate> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& u, const Tensor& g) {
    ctx->save_for_backward({u, g});
    return forward_cpu(Loop::kReluForward, u, g, Tensor());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [du, dg] = backward_cpu(Loop::kReluBackward, saved[0], saved[1], grads[0], saved[0].scalar_type());
    return {du, dg};
  }
};

}  // namespace

Tensor sigmoid_gate_unfused(const Tensor& x, const Tensor& z, const Tensor& base) {
  const auto y = x * torch::sigmoid(z);
  return base.defined() ? base + y : y;
}

Tensor relu_gate_unfused(const Tensor& u, const Tensor& g) { return u * torch::relu(g); }

Tensor sigmoid_gate(const Tensor& x, const Tensor& z, const Tensor& base) {
  BAKALLM_TRACE("sigmoid_gate");
  if (!fused(x, z, base, /*b_alone=*/true)) return sigmoid_gate_unfused(x, z, base);
  if (!wants_grad(x, z, base)) return forward_cpu(Loop::kSigmoidForward, x, z, base);
  if (base.defined()) return SigmoidGate<true>::apply(x, z, base);
  return SigmoidGate<false>::apply(x, z, x);  // the third input unused (apply takes no undefined tensor)
}

Tensor relu_gate(const Tensor& u, const Tensor& g) {
  BAKALLM_TRACE("relu_gate");
  if (!fused(u, g, Tensor(), /*b_alone=*/false)) return relu_gate_unfused(u, g);
  if (!wants_grad(u, g)) return forward_cpu(Loop::kReluForward, u, g, Tensor());
  return ReluGate::apply(u, g);
}

}  // namespace bakallm
