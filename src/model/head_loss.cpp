#include "model/head_loss.h"

#include "model/matmul.h"

namespace bakallm {

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FusedHeadLoss : public torch::autograd::Function<FusedHeadLoss> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& h, const Tensor& W, const Tensor& targets,
                        int64_t compute, int64_t chunk) {
    const int64_t N = h.size(0);
    const auto valid = targets.ne(kIgnoreIndex);                        // [N]
    const auto count = valid.sum().item<int64_t>();
    auto lse = torch::empty({N}, h.options().dtype(torch::kFloat));     // [N] log Σ exp(logits)
    auto total = torch::zeros({}, h.options().dtype(torch::kDouble));
    for (int64_t r = 0; r < N; r += chunk) {
      const int64_t n = std::min(chunk, N - r);
      auto logits = matmul_nt(h.narrow(0, r, n), W, static_cast<torch::ScalarType>(compute)).to(torch::kFloat);
      auto m = std::get<0>(logits.max(1, true));                        // [n, 1]
      auto l = (logits - m).exp_().sum(1).log_() + m.squeeze(1);        // [n]
      lse.narrow(0, r, n).copy_(l);
      auto t = targets.narrow(0, r, n);
      auto ok = valid.narrow(0, r, n);
      auto picked = logits.gather(1, t.clamp_min(0).unsqueeze(1)).squeeze(1);  // [n]
      total += ((l - picked) * ok).sum().to(torch::kDouble);
    }
    ctx->save_for_backward({h, W, targets, lse});
    ctx->saved_data["compute"] = compute;
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["count"] = count;
    return (count > 0 ? total / static_cast<double>(count) : total).to(h.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &W = saved[1], &targets = saved[2], &lse = saved[3];
    const auto compute = static_cast<torch::ScalarType>(ctx->saved_data["compute"].toInt());
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const int64_t count = ctx->saved_data["count"].toInt();
    auto dh = torch::zeros_like(h);
    auto dW = torch::zeros_like(W);
    if (count == 0) return {dh, dW, Tensor(), Tensor(), Tensor()};
    const auto scale = grads[0].to(torch::kFloat) / static_cast<double>(count);
    const int64_t N = h.size(0);
    for (int64_t r = 0; r < N; r += chunk) {
      const int64_t n = std::min(chunk, N - r);
      auto hc = h.narrow(0, r, n);
      auto t = targets.narrow(0, r, n);
      auto logits = matmul_nt(hc, W, compute).to(torch::kFloat);                  // [n, V]
      auto p = (logits - lse.narrow(0, r, n).unsqueeze(1)).exp_();                 // softmax
      auto ok = t.ne(kIgnoreIndex);
      p.scatter_add_(1, t.clamp_min(0).unsqueeze(1), -ok.to(torch::kFloat).unsqueeze(1));
      p.mul_((ok.to(torch::kFloat) * scale).unsqueeze(1));                          // dlogits
      dh.narrow(0, r, n).copy_(matmul_nt(p, W.t(), compute));                      // [n, D] = p · W
      dW += matmul_nt(p.t(), hc.t(), compute);                                     // [V, D] = pᵀ · h
    }
    return {dh, dW, Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

torch::Tensor fused_head_loss(const torch::Tensor& h, const torch::Tensor& W, const torch::Tensor& targets,
                              torch::ScalarType compute, int64_t rows_per_chunk) {
  TORCH_CHECK(h.dim() == 2 && W.dim() == 2 && h.size(1) == W.size(1), "fused_head_loss: h [N, D], W [V, D]");
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == h.size(0), "fused_head_loss: targets [N]");
  return FusedHeadLoss::apply(h, W, targets, static_cast<int64_t>(compute), rows_per_chunk);
}

}  // namespace bakallm
