// MEGA-style damped EMA over time, per feature (`mega.dampeners` [2, D]):
//   alpha = sigmoid(dampeners[0]),  q = (1 − alpha) ⊙ sigmoid(dampeners[1])
//   y_t = q ⊙ y_{t−1} + alpha ⊙ u_t,  u = [previous window ; x]
// and mega(x) is the last len(x) rows of y. Init [0.9999, 0.9899].
#pragma once
#include <torch/torch.h>

namespace bakallm {

class MegaImpl : public torch::nn::Module {
 public:
  explicit MegaImpl(int64_t dim);

  // x: [B, T, D]; prev: [B, Tp, D] or undefined (a stream's first window).  -> [B, T, D]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& prev);

  // alpha and q as used by the scan, each [D].
  std::pair<torch::Tensor, torch::Tensor> coefficients() const;

  torch::Tensor dampeners;  // [2, D]
};
TORCH_MODULE(Mega);

}  // namespace bakallm
