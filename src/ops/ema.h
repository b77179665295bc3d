// The damped EMA of MEGA as its own autograd function: a linear scan over
// time, forward and backward, O(T·D), vectorised over D. No FFT.
//
//   y_t = q ⊙ y_{t-1} + alpha ⊙ u_t,   y_{-1} = y0 (zero when not given)
//
// Backward, with g_t the total gradient reaching y_t (scanned in reverse):
//   g_t = dy_t + q ⊙ g_{t+1};  du_t = alpha ⊙ g_t;  dy0 = q ⊙ g_0;
//   dalpha = Σ_{b,t} g_t ⊙ u_t;  dq = Σ_{b,t} g_t ⊙ y_{t-1}.
// Scanning [a ; b] equals scanning b from y0 = the last row of scan(a): a
// window continues the previous one's EMA from one [B, D] value, whether it
// is read whole (training, prefill) or a row at a time (decoding).
#pragma once
#include <torch/torch.h>

namespace bakallm {

// u: [B, T, D]; alpha, q: [D]; y0: [B, D] or undefined. Returns y: [B, T, D]
// in u's dtype. CPU float/double run a hand-written loop; other devices and
// dtypes a per-step tensor loop with the same arithmetic.
torch::Tensor ema_scan(const torch::Tensor& u, const torch::Tensor& alpha, const torch::Tensor& q,
                       const torch::Tensor& y0 = {});

}  // namespace bakallm
