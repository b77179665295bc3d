#include "model/matmul.h"

#include <ATen/Context.h>

#include <cstdlib>
#include <cstring>

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kMinOneDnnWork = 64 * 64 * 64;  // below this, call overhead dominates
constexpr int64_t kMinOneDnnRows = 32;  // fewer rows (decoding): a memory-bound gemv, where
                                        // converting the weight to oneDNN's layout costs more than it saves

// [M, K] x [N, K]ᵀ on oneDNN, dense in, dense out.
Tensor onednn_nt_2d(const Tensor& a, const Tensor& b) {
  return at::mkldnn_linear(a.contiguous().to_mkldnn(), b.contiguous().to_mkldnn(), {}).to_dense();
}

Tensor product_nt(const Tensor& a, const Tensor& b) {
  const int64_t rows = a.numel() / std::max<int64_t>(1, a.size(-1));
  const int64_t work = a.size(-2) * a.size(-1) * b.size(-2);
  const bool onednn = onednn_enabled() && a.device().is_cpu() && a.scalar_type() == torch::kFloat &&
                      b.scalar_type() == torch::kFloat && work >= kMinOneDnnWork && rows >= kMinOneDnnRows &&
                      a.numel() > 0 && b.numel() > 0;
  if (!onednn) return torch::matmul(a, b.transpose(-1, -2));
  if (a.dim() == 2 && b.dim() == 2) return onednn_nt_2d(a, b);
  if (b.dim() == 2) {  // shared right factor: fold the batch into M
    auto flat = onednn_nt_2d(a.reshape({-1, a.size(-1)}), b);
    auto sizes = a.sizes().vec();
    sizes.back() = b.size(0);
    return flat.view(sizes);
  }
  auto a3 = a.reshape({-1, a.size(-2), a.size(-1)});
  auto b3 = b.reshape({-1, b.size(-2), b.size(-1)});
  auto out = torch::empty({a3.size(0), a3.size(1), b3.size(1)}, a.options());
  for (int64_t i = 0; i < a3.size(0); ++i) out[i].copy_(onednn_nt_2d(a3[i], b3[i]));
  auto sizes = a.sizes().vec();
  sizes.back() = b.size(-2);
  return out.view(sizes);
}

// Sum DB over leading dims when b was shared (2-D) across a batched a.
Tensor reduce_to(const Tensor& grad, const Tensor& like) {
  if (grad.dim() == like.dim()) return grad;
  return grad.reshape({-1, like.size(0), like.size(1)}).sum(0);
}

class MatmulNT : public torch::autograd::Function<MatmulNT> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& a, const Tensor& b) {
    ctx->save_for_backward({a, b});
    return product_nt(a, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& a = saved[0];
    const auto& b = saved[1];
    const auto dy = grads[0];
    Tensor da, db;
    if (ctx->needs_input_grad(0)) da = product_nt(dy, b.transpose(-1, -2));  // dy · b
    if (ctx->needs_input_grad(1)) {
      if (b.dim() == 2 && a.dim() > 2) {  // dyᵀ · a with the batch folded in
        db = product_nt(dy.reshape({-1, dy.size(-1)}).t(), a.reshape({-1, a.size(-1)}).t());
      } else {
        db = reduce_to(product_nt(dy.transpose(-1, -2), a.transpose(-1, -2)), b);
      }
    }
    return {da, db};
  }
};

}  // namespace

bool onednn_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("BAKALLM_ONEDNN");
    return at::hasMKLDNN() && !(env && std::strcmp(env, "0") == 0);
  }();
  return enabled;
}

Tensor matmul_nt(const Tensor& a, const Tensor& b, torch::ScalarType compute) {
  const auto out_dtype = a.scalar_type();
  if (compute != torch::kFloat || out_dtype != torch::kFloat)
    return torch::matmul(a.to(compute), b.to(compute).transpose(-1, -2)).to(out_dtype);
  if (!onednn_enabled() || !a.device().is_cpu()) return torch::matmul(a, b.transpose(-1, -2));
  return MatmulNT::apply(a, b);
}

}  // namespace bakallm
