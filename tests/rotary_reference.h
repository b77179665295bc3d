// Rotary embedding written as complex multiplication, in float64: the
// reference the fused rotation (tests/ops) and the rotary module's table
// (tests/model) are held to.
#pragma once
#include <torch/torch.h>

namespace bakallm::test {

// x [..., T, F]: pairs (2j, 2j+1) of the first D features as complex numbers
// times e^{i·angle} (ANGLE [..., T, D/2], broadcast against x's rows); the
// other F - D features as they are.
inline torch::Tensor rotated_reference(const torch::Tensor& x, const torch::Tensor& angle, int64_t D) {
  auto pairs = torch::view_as_complex(x.narrow(-1, 0, D).to(torch::kDouble).contiguous().unflatten(-1, {D / 2, 2}));
  auto a = angle.to(torch::kDouble);
  auto turned = torch::view_as_real(pairs * torch::polar(torch::ones_like(a), a));
  return torch::cat({turned.flatten(-2), x.narrow(-1, D, x.size(-1) - D).to(torch::kDouble)}, -1);
}

}  // namespace bakallm::test
