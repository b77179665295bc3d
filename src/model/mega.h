// MEGA-style damped EMA over time, per feature (`mega.dampeners` [2, D]):
//   alpha = sigmoid(dampeners[0]),  q = (1 − alpha) ⊙ sigmoid(dampeners[1])
//   y_t = q ⊙ y_{t−1} + alpha ⊙ u_t,  u = [previous window ; x]
// and mega(x) is the last len(x) rows of y: the scan of x continued from the
// value y reaches at the end of the previous window. Init [0.9999, 0.9899].
#pragma once
#include <torch/torch.h>

namespace bakallm {

class MegaImpl : public torch::nn::Module {
 public:
  explicit MegaImpl(int64_t dim);

  // alpha and q as used by the scan, each [D].
  std::pair<torch::Tensor, torch::Tensor> coefficients() const;

  // The EMA of x [B, T, D] from y_{-1} = 0.                            -> [B, T, D]
  torch::Tensor forward(const torch::Tensor& x);
  // The EMA value after the rows PREV [B, Tp, D], from y_{-1} = 0.      -> [B, D]
  torch::Tensor state_after(const torch::Tensor& prev, const torch::Tensor& alpha, const torch::Tensor& q) const;
  // The EMA of x [B, n, D] continued from the value Y0 [B, D] (undefined: 0).  -> [B, n, D]
  torch::Tensor continued(const torch::Tensor& x, const torch::Tensor& y0, const torch::Tensor& alpha,
                          const torch::Tensor& q) const;

  torch::Tensor dampeners;  // [2, D]
};
TORCH_MODULE(Mega);

}  // namespace bakallm
