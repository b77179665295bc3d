// Rotary position embedding on interleaved pairs of the first D features of a
// [.., T, 2D] tensor; the `negator - x` half (features D..2D-1) is left alone.
//   angle(pos, j) = pos · f_j,  f_j = base^(-2j/D)      (`freqs` [D/2], a buffer)
//   x'[2j]   = x[2j]·cos − x[2j+1]·sin
//   x'[2j+1] = x[2j+1]·cos + x[2j]·sin
//
// cos and sin of the angles are kept in a table by position, grown on demand:
// a decoded token looks its position up instead of computing them (four ops
// and two transcendental passes per query and key).
#pragma once
#include <torch/torch.h>

#include <mutex>

namespace bakallm {

class RotaryImpl : public torch::nn::Module {
 public:
  RotaryImpl(int64_t dim, double base);

  // x: [B, T, 2D]; row t gets position start + t.                 -> [B, T, 2D]
  torch::Tensor forward(const torch::Tensor& x, int64_t start) const;
  // Per-row starts: row b, step t gets position starts[b] + t.    starts [B]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& starts) const;

  // The cos and sin forward rotates X's rows by, in X's dtype (for an op
  // that rotates as it computes, ops/negated_norm.h):       [T, D/2] each
  struct Angles {
    torch::Tensor cos, sin;
  };
  Angles angles(const torch::Tensor& x, int64_t start) const;
  Angles angles(const torch::Tensor& x, const torch::Tensor& starts) const;  // [B, T, D/2] each

  // Expected value of `freqs`, to check an imported buffer against.
  static torch::Tensor make_freqs(int64_t dim, double base);

  torch::Tensor freqs;  // [D/2]
 private:
  struct Table {
    torch::Tensor cos, sin;  // [P, D/2]: cos and sin of angle(p, j), positions 0..P-1
    int64_t version = -1;    // freqs' version when computed (an imported buffer is copied in)
  };
  // The table with at least POSITIONS positions, for freqs' device and dtype
  // and the current mode (c10::InferenceMode or not).
  Table table(int64_t positions) const;
  int64_t dim_;
  mutable std::mutex table_mutex_;  // one model may serve several threads
  mutable Table table_, inference_table_;  // made outside and inside c10::InferenceMode
};
TORCH_MODULE(Rotary);

}  // namespace bakallm
