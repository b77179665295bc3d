#include "model/mega.h"

#include "model/ema.h"

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

torch::Tensor MegaImpl::forward(const torch::Tensor& x, const torch::Tensor& prev) {
  auto [alpha, q] = coefficients();
  auto u = prev.defined() ? torch::cat({prev, x}, 1) : x;     // [B, Tp+T, D]
  auto y = ema_scan(u, alpha, q);                              // [B, Tp+T, D]
  return y.narrow(1, y.size(1) - x.size(1), x.size(1));        // [B, T, D]
}

}  // namespace bakallm
