#include "ops/gate.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "ops/autograd.h"
#include "ops/avx512.h"
#include "ops/cpu.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrain = 16384;  // values per task: a decoded row runs on the calling thread

// The pointers of one elementwise pass; null where an operand is absent.
struct Pass {
  const float* a = nullptr;  // x or u
  const float* b = nullptr;  // z or g
  const float* c = nullptr;  // base (forward) or dy (backward)
  float* out0 = nullptr;     // y, or dx / du
  float* out1 = nullptr;     // dz / dg (backward)
};

// σ(z) = 1 / (1 + exp(−z)), as torch.sigmoid computes it.
inline float sigmoid1(float z) { return 1.0f / (1.0f + std::exp(-z)); }

BAKALLM_AVX512 inline __m512 sigmoid16(__m512 z) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, _ZGVeN16v_expf(_mm512_sub_ps(_mm512_setzero_ps(), z))));
}

BAKALLM_AVX512 inline __mmask16 lanes(int64_t i, int64_t n) {
  return i + 16 <= n ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
}

// The four loops, each over values [0, n) of P (offset by the caller).
enum class Loop { kSigmoidForward, kSigmoidBackward, kReluForward, kReluBackward };

BAKALLM_AVX512 void run_avx512(Loop loop, const Pass& p, int64_t n) {
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = lanes(i, n);
    const __m512 a = _mm512_maskz_loadu_ps(k, p.a + i), b = _mm512_maskz_loadu_ps(k, p.b + i);
    switch (loop) {
      case Loop::kSigmoidForward: {
        __m512 y = _mm512_mul_ps(a, sigmoid16(b));
        if (p.c) y = _mm512_add_ps(_mm512_maskz_loadu_ps(k, p.c + i), y);
        _mm512_mask_storeu_ps(p.out0 + i, k, y);
        break;
      }
      case Loop::kSigmoidBackward: {
        const __m512 dy = _mm512_maskz_loadu_ps(k, p.c + i), s = sigmoid16(b);
        _mm512_mask_storeu_ps(p.out0 + i, k, _mm512_mul_ps(dy, s));
        _mm512_mask_storeu_ps(p.out1 + i, k, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dy, a), _mm512_sub_ps(one, s)), s));
        break;
      }
      case Loop::kReluForward: _mm512_mask_storeu_ps(p.out0 + i, k, _mm512_mul_ps(a, _mm512_max_ps(b, zero))); break;
      case Loop::kReluBackward: {
        const __m512 dy = _mm512_maskz_loadu_ps(k, p.c + i);
        _mm512_mask_storeu_ps(p.out0 + i, k, _mm512_mul_ps(dy, _mm512_max_ps(b, zero)));
        const __mmask16 positive = _mm512_cmp_ps_mask(b, zero, _CMP_GT_OQ);
        _mm512_mask_storeu_ps(p.out1 + i, k, _mm512_maskz_mul_ps(positive, dy, a));
        break;
      }
    }
  }
}

void run_portable(Loop loop, const Pass& p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float a = p.a[i], b = p.b[i];
    switch (loop) {
      case Loop::kSigmoidForward: p.out0[i] = (p.c ? p.c[i] : 0.0f) + a * sigmoid1(b); break;
      case Loop::kSigmoidBackward: {
        const float s = sigmoid1(b);
        p.out0[i] = p.c[i] * s;
        p.out1[i] = p.c[i] * a * (1.0f - s) * s;
        break;
      }
      case Loop::kReluForward: p.out0[i] = a * std::max(b, 0.0f); break;
      case Loop::kReluBackward:
        p.out0[i] = p.c[i] * std::max(b, 0.0f);
        p.out1[i] = b > 0.0f ? p.c[i] * a : 0.0f;
        break;
    }
  }
}

// LOOP over every value of P's n, split between threads.
void run(Loop loop, const Pass& p, int64_t n) {
  const bool vector = cpu_has_avx512();
  at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    auto at = [&](const float* q) { return q ? q + i0 : nullptr; };
    const Pass part{at(p.a), at(p.b), at(p.c), p.out0 ? p.out0 + i0 : nullptr, p.out1 ? p.out1 + i0 : nullptr};
    vector ? run_avx512(loop, part, i1 - i0) : run_portable(loop, part, i1 - i0);
  });
}

const float* values(const Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// y = LOOP's forward of a (x or u), b (z or g) and c (base or none).
Tensor forward_cpu(Loop loop, const Tensor& a_in, const Tensor& b_in, const Tensor& c_in) {
  const auto a = a_in.contiguous(), b = b_in.contiguous(), c = c_in.defined() ? c_in.contiguous() : Tensor();
  auto y = torch::empty_like(a, torch::MemoryFormat::Contiguous);
  run(loop, Pass{values(a), values(b), values(c), y.data_ptr<float>(), nullptr}, a.numel());
  return y;
}

// {da, db} of LOOP's backward given dy.
std::pair<Tensor, Tensor> backward_cpu(Loop loop, const Tensor& a_in, const Tensor& b_in, const Tensor& dy_in) {
  const auto a = a_in.contiguous(), b = b_in.contiguous(), dy = dy_in.contiguous().to(torch::kFloat);
  auto da = torch::empty_like(a), db = torch::empty_like(b);
  run(loop, Pass{values(a), values(b), values(dy), da.data_ptr<float>(), db.data_ptr<float>()}, a.numel());
  return {da, db};
}

bool fused(const Tensor& a, const Tensor& b, const Tensor& c) {
  auto plain = [&](const Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat && t.sizes() == a.sizes();
  };
  return plain(a) && plain(b) && (!c.defined() || plain(c));
}

// x ⊙ σ(z), with or without a base added (BASED: the third input).
template <bool Based>
class SigmoidGate : public torch::autograd::Function<SigmoidGate<Based>> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& z, const Tensor& base) {
    ctx->save_for_backward({x, z});
    return forward_cpu(Loop::kSigmoidForward, x, z, Based ? base : Tensor());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [dx, dz] = backward_cpu(Loop::kSigmoidBackward, saved[0], saved[1], grads[0]);
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
    auto [du, dg] = backward_cpu(Loop::kReluBackward, saved[0], saved[1], grads[0]);
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
  if (!fused(x, z, base)) return sigmoid_gate_unfused(x, z, base);
  if (!wants_grad(x, z, base)) return forward_cpu(Loop::kSigmoidForward, x, z, base);
  if (base.defined()) return SigmoidGate<true>::apply(x, z, base);
  return SigmoidGate<false>::apply(x, z, x);  // the third input unused (apply takes no undefined tensor)
}

Tensor relu_gate(const Tensor& u, const Tensor& g) {
  if (!fused(u, g, Tensor())) return relu_gate_unfused(u, g);
  if (!wants_grad(u, g)) return forward_cpu(Loop::kReluForward, u, g, Tensor());
  return ReluGate::apply(u, g);
}

}  // namespace bakallm
