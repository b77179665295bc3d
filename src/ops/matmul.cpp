#include "ops/matmul.h"

#include <ATen/TensorUtils.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "ops/autograd.h"
#include "ops/cast_cache.h"
#include "ops/cpu.h"
#include "ops/fast_tensor.h"
#include "ops/onednn.h"
#include "ops/trace.h"
#include "util/clock.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Tensor as(const Tensor& t, torch::ScalarType dtype) { return t.scalar_type() == dtype ? t : t.to(dtype); }

// A product's left operand in the compute dtype, cast once for the products
// that read the same activation: a block's normed input h feeds q, k, v,
// fc_gate and fc_up, five products and (in bfloat16) one cast, which their
// backwards share too. Eight kept casts, the least recently used replaced,
// each while its source is unchanged (ops/cast_cache.h): between q's and
// fc_up's products of h a block casts six other activations (m, the scores,
// the weights, ...), and two slots had cast h and m twice a layer (216 casts
// of [4, 578, 320] in a short tiny bench against 152 with 8 or 16 slots).
// Cast each time: an inference tensor (it has no version to check), and a
// cast autograd records (libtorch's product differentiates through it; the
// kept casts hold no graph).
Tensor as_operand(const Tensor& a, torch::ScalarType dtype) {
  if (a.scalar_type() == dtype || a.is_inference() || wants_grad(a)) return as(a, dtype);
  constexpr int kKept = 8;
  thread_local CastCache kept[kKept];
  thread_local int64_t used[kKept] = {0}, uses = 0;  // when each slot was last used
  int slot = -1;
  for (int i = 0; i < kKept && slot < 0; ++i)
    if (kept[i].holds(a, dtype)) slot = i;
  if (slot < 0) slot = static_cast<int>(std::min_element(used, used + kKept) - used);  // the least recently used
  used[slot] = ++uses;
  return kept[slot].get(a, dtype);
}

// Whether T [..., N] views as rows [-1, N] (else reshape copies it).
bool folds_to_rows(const Tensor& t) {
  if (t.dim() <= 2 || t.numel() == 0) return true;
  const int64_t N = t.size(-1);
  return at::detail::computeStride(t.sizes(), t.strides(), c10::IntArrayRef{t.numel() / N, N}).has_value();
}

bool use_onednn(const Tensor& a, const Tensor& b, torch::ScalarType compute) {
  if (!onednn_enabled() || !a.device().is_cpu() || a.numel() == 0 || b.numel() == 0) return false;
  return compute == torch::kFloat || compute == torch::kBFloat16;
}

// Whether product() computes a · b on oneDNN in COMPUTE itself (GradientSum::add
// adds into its sum inside that product).
bool onednn_runs(const Tensor& a, const Tensor& b, torch::ScalarType compute) {
  return use_onednn(a, b, compute) && onednn::supports(compute);
}

// a · b for a [..., M, K] and b [K, N] or [..., K, N] -> [..., M, N] in OUT,
// computed in COMPUTE.
Tensor product(const Tensor& a, const Tensor& b, torch::ScalarType compute, torch::ScalarType out) {
  const auto ac = as_operand(a, compute), bc = as(b, compute);
  if (compute == torch::kBFloat16 && a.device().is_cpu() && !onednn::supports(compute)) {
    // No bfloat16 kernel in oneDNN here (AVX2): the bfloat16 operands'
    // product in float32, which is what oneDNN computes (libtorch's own
    // bfloat16 product rounds its result to bfloat16).
    return as(product(as(ac, torch::kFloat), as(bc, torch::kFloat), torch::kFloat, torch::kFloat), out);
  }
  if (!onednn_runs(a, b, compute)) return as(torch::matmul(ac, bc), out);
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  auto sizes = a.sizes().vec();
  sizes.back() = N;
  if (b.dim() == 2) {  // shared right factor: fold the batch into M
    if (a.dim() <= 2) return onednn::matmul(ac, bc, out);
    return onednn::matmul(ac.reshape({-1, K}), bc, out).view(sizes);
  }
  return onednn::matmul(ac.reshape({-1, M, K}), bc.reshape({-1, K, N}), out).view(sizes);
}

// C += a · b (b [K, N] or a's batch; C [..., M, N]): on oneDNN inside the
// product (its sum post-op) where C is contiguous and takes the product's
// dtype, else a product and add_.
void add_product(const Tensor& c, const Tensor& a, const Tensor& b, torch::ScalarType compute) {
  if (b.dim() == 2 && onednn_runs(a, b, compute) && c.is_contiguous() &&
      (c.scalar_type() == torch::kFloat || c.scalar_type() == compute)) {
    const int64_t K = a.size(-1), N = b.size(-1);
    onednn::matmul_add(as_operand(a, compute).reshape({-1, K}), as(b, compute), c.view({-1, N}));
  } else {
    c.add_(product(a, b, compute, c.scalar_type()));
  }
}

// The gradient of a left operand its products share (SumGradients): each
// product joins in forward; the backwards add to SUM, the last returns it.
struct GradientSum : torch::CustomClassHolder {
  int64_t products = 0;  // the products of the operand recorded
  int64_t pending = 0;   // their backwards still to come in this pass
  Tensor sum;            // the gradient so far in this pass

  ~GradientSum() override {
    if (sum.defined())
      TORCH_WARN("matmul_nt: ", pending, " of ", products,
                 " products of a shared input never ran their backward; its gradient was not returned");
  }

  // Adds dy · b (b [N, K]; dy [..., N] in the compute dtype) to the sum;
  // the sum [..., K] in A_DTYPE when this was the last product, else undefined.
  Tensor add(const Tensor& dy, const Tensor& b, torch::ScalarType compute, torch::ScalarType a_dtype);
};

struct OpenSum {
  const void* input;
  c10::intrusive_ptr<GradientSum> sum;
};
thread_local std::vector<OpenSum> open_sums;

// The open sum of A's gradient, or null.
c10::intrusive_ptr<GradientSum> open_sum_of(const Tensor& a) {
  for (auto it = open_sums.rbegin(); it != open_sums.rend(); ++it)
    if (it->input == a.unsafeGetTensorImpl()) return it->sum;
  return {};
}

class MatmulNT : public torch::autograd::Function<MatmulNT> {
 public:
  // a [..., M, K], b [..., N, K] or [N, K] -> [..., M, N]; b_compute: b's
  // kept cast to COMPUTE, or b itself (autograd's apply takes no undefined
  // tensor); its gradient is b's
  static Tensor forward(AutogradContext* ctx, const Tensor& a, const Tensor& b, const Tensor& b_compute,
                        int64_t compute_dtype, int64_t out_dtype) {
    const auto compute = static_cast<torch::ScalarType>(compute_dtype);
    const auto ac = as_operand(a, compute), bc = as(b_compute, compute);  // saved as computed: no second cast
    ctx->save_for_backward({ac, bc});
    ctx->saved_data["compute"] = compute_dtype;
    ctx->saved_data["a_dtype"] = static_cast<int64_t>(a.scalar_type());
    ctx->saved_data["b_dtype"] = static_cast<int64_t>(b.scalar_type());
    if (auto sum = open_sum_of(a)) {  // a's gradient summed with its other products' (SumGradients)
      ++sum->products;
      ++sum->pending;
      ctx->saved_data["sum"] = c10::IValue::make_capsule(std::move(sum));
    }
    return product(ac, bc.transpose(-1, -2), compute, static_cast<torch::ScalarType>(out_dtype));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& a = saved[0];
    const auto& b = saved[1];
    const auto compute = static_cast<torch::ScalarType>(ctx->saved_data["compute"].toInt());
    const auto a_dtype = static_cast<torch::ScalarType>(ctx->saved_data["a_dtype"].toInt());
    const auto b_dtype = static_cast<torch::ScalarType>(ctx->saved_data["b_dtype"].toInt());
    // [..., M, N]; with a shared weight both products fold dy's batch into
    // its rows: made contiguous once where that takes a copy (its slices
    // apart: the values' gradient, a narrow of the cat's), not by each reshape
    auto dy = as(grads[0], compute);
    if (b.dim() == 2 && !folds_to_rows(dy)) dy = dy.contiguous();
    Tensor da, db;
    if (ctx->needs_input_grad(0)) {  // dy · b: [..., M, K]
      const auto sum = ctx->saved_data.find("sum");
      da = sum == ctx->saved_data.end()
               ? product(dy, b, compute, a_dtype)
               : c10::static_intrusive_pointer_cast<GradientSum>(sum->second.toCapsule())->add(dy, b, compute, a_dtype);
    }
    if (ctx->needs_input_grad(1)) {
      if (b.dim() == 2) {  // dyᵀ · a with the batch folded in: [N, K]
        db = product(dy.reshape({-1, dy.size(-1)}).t(), a.reshape({-1, a.size(-1)}), compute, b_dtype);
      } else if (b.stride(-2) == 1 && b.stride(-1) != 1) {
        // b a transposed view (the values' Vᵀ in weights · V): dbᵀ = aᵀ · dy
        // [..., K, N] in b's own layout, so the gradient reaches V in V's
        // rows (dyᵀ · a, transposed back, had reached the cat's backward and
        // the value product with its features strided: a copy each)
        db = product(a.transpose(-1, -2), dy, compute, b_dtype).transpose(-1, -2);
      } else {
        db = product(dy.transpose(-1, -2), a, compute, b_dtype);  // [..., N, K]
      }
    }
    return {da, db, Tensor(), Tensor(), Tensor()};
  }
};

Tensor GradientSum::add(const Tensor& dy, const Tensor& b, torch::ScalarType compute, torch::ScalarType a_dtype) {
  if (!sum.defined()) {
    sum = product(dy, b, compute, a_dtype);
  } else {
    add_product(sum, dy, b, compute);
  }
  if (--pending > 0) return {};
  pending = products;  // a second backward through the same graph sums again
  return std::exchange(sum, Tensor());
}

// Few rows against a stored weight [N, K] (decoding): the row kernel, which
// reads the weight in place in its own dtype (ops/row_product.h). Many rows
// run faster in oneDNN (bfloat16 on AMX; float32 tiles beyond 16 rows).
int64_t most_rows(torch::ScalarType compute) { return compute == torch::kFloat ? 16 : compute == torch::kBFloat16 ? 4 : 0; }

bool few_rows(const Tensor& a, const Tensor& b, torch::ScalarType compute) {
  const int64_t K = b.dim() == 2 ? b.size(1) : 0;
  if (K == 0 || K % 32 != 0 || a.size(-1) != K || !a.device().is_cpu() || !b.device().is_cpu()) return false;
  if (a.scalar_type() != torch::kFloat || b.scalar_type() != compute || !b.is_contiguous()) return false;
  const int64_t rows = a.numel() / K;
  return rows >= 1 && rows <= most_rows(compute) && kernel_isa() != Isa::kPortable;
}

}  // namespace

SumGradients::SumGradients(const Tensor& a) {
  if (!wants_grad(a)) return;
  input_ = a.unsafeGetTensorImpl();
  open_sums.push_back({input_, c10::make_intrusive<GradientSum>()});
}

SumGradients::~SumGradients() {
  if (!input_) return;
  for (auto it = open_sums.rbegin(); it != open_sums.rend(); ++it)
    if (it->input == input_) {
      open_sums.erase(std::next(it).base());
      return;
    }
}

Tensor rows_nt(const Tensor& a_in, const void* w, const float* scales, RowWeights kind, int64_t N) {
  const int64_t K = a_in.size(-1), M = a_in.numel() / K;
  const auto a = a_in.contiguous();
  auto sizes = a.sizes().vec();
  sizes.back() = N;
  auto y = empty_rows(sizes, a.scalar_type(), a.device());
  row_product(a.data_ptr<float>(), M, K, w, scales, kind, y.data_ptr<float>(), N);
  return y;
}

bool onednn_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("BAKALLM_ONEDNN");
    return onednn::available() && !(env && std::strcmp(env, "0") == 0);
  }();
  return enabled;
}

Tensor matmul_nt(const Tensor& a, const Tensor& b, torch::ScalarType compute_in, const Tensor& b_compute,
                 torch::ScalarType out_in) {
  BAKALLM_TRACE("matmul_nt");
  const auto compute = product_dtype(a.scalar_type(), compute_in);
  const auto out = out_in == torch::ScalarType::Undefined ? a.scalar_type() : out_in;
  const auto& cast = b_compute.defined() && b_compute.scalar_type() == compute ? b_compute : Tensor();
  // Our backward only where oneDNN runs and a gradient is wanted; elsewhere
  // product() is plain libtorch ops (autograd's own backward) or needs none.
  if (!wants_grad(a, b)) {
    const auto& bc = cast.defined() ? cast : b;
    if (few_rows(a, bc, compute))
      return as(rows_nt(a, bc.data_ptr(), nullptr,
                        bc.scalar_type() == torch::kFloat ? RowWeights::kFloat : RowWeights::kBFloat16, bc.size(0)),
                out);
    return product(a, bc.transpose(-1, -2), compute, out);
  }
  if (!use_onednn(a, b, compute)) return product(a, b.transpose(-1, -2), compute, out);
  return MatmulNT::apply(a, b, cast.defined() ? cast : b, static_cast<int64_t>(compute), static_cast<int64_t>(out));
}

void matmul_nt_add(const Tensor& c, const Tensor& a, const Tensor& b, torch::ScalarType compute) {
  TORCH_CHECK(!wants_grad(a, b), "matmul_nt_add: no autograd");
  add_product(c, a, b.transpose(-1, -2), product_dtype(a.scalar_type(), compute));
}

torch::ScalarType inner_dtype(const Tensor& a, torch::ScalarType compute) {
  const int64_t rows = a.dim() == 0 || a.size(-1) == 0 ? 0 : a.numel() / a.size(-1);
  return compute == torch::kBFloat16 && a.scalar_type() == torch::kFloat && rows > most_rows(compute) ? compute
                                                                                                       : a.scalar_type();
}

double measure_matmul_flops(torch::ScalarType compute, int64_t n, int rounds, int reps) {
  torch::NoGradGuard no_grad;
  // Operands already in COMPUTE: the peak of the product, not of a conversion
  // before it (bfloat16 at n = 1024 spent ~15% of its time converting).
  auto a = torch::randn({n, n}).to(compute), b = torch::randn({n, n}).to(compute);
  matmul_nt(a, b, compute);  // warm-up: primitive creation, first touch
  double best = 0;  // a peak: the best of a few rounds, so one stall of a neighbour does not set it
  for (int round = 0; round < rounds; ++round) {
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) matmul_nt(a, b, compute);
    const double seconds = seconds_since(t0);
    best = std::max(best, 2.0 * n * n * n * reps / seconds);
  }
  return best;
}

}  // namespace bakallm
