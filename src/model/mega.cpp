#include "model/mega.h"

#include "ops/ema.h"

namespace bakallm {

MegaImpl::MegaImpl(int64_t dim) {
  auto init = torch::empty({2, dim});
  init[0].fill_(0.9999);
  init[1].fill_(0.9899);
  dampeners = register_parameter("dampeners", init);
}

std::pair<torch::Tensor, torch::Tensor> MegaImpl::coefficients() const {
  auto alpha = torch::sigmoid(dampeners[0]);       // [D]
  auto delta = torch::sigmoid(dampeners[1]);       // [D]
  return {alpha, (1 - alpha) * delta};
}

torch::Tensor MegaImpl::forward(const torch::Tensor& x) {
  auto [alpha, q] = coefficients();
  return ema_scan(x, alpha, q);  // [B, T, D]
}

torch::Tensor MegaImpl::state_after(const torch::Tensor& prev, const torch::Tensor& alpha,
                                    const torch::Tensor& q) const {
  return ema_scan(prev, alpha, q).select(1, prev.size(1) - 1);  // [B, D]
}

torch::Tensor MegaImpl::continued(const torch::Tensor& x, const torch::Tensor& y0, const torch::Tensor& alpha,
                                  const torch::Tensor& q) const {
  return ema_scan(x, alpha, q, y0);  // [B, n, D]
}

}  // namespace bakallm
