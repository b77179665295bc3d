// The fused rotation (ops/rotary.h) against rotary embedding written as
// complex multiplication (pairs as complex numbers times e^{i·angle}), forward
// and backward, with shared and per-row angles, features past D copied, and a
// non-contiguous input; and the tensor-expression path (double) alike.
#include <gtest/gtest.h>

#include "ops/rotary.h"
#include "rotary_reference.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

void check(const torch::Tensor& x_in, const torch::Tensor& angle, int64_t D) {
  auto x = x_in.detach().requires_grad_();
  auto y = rotate_pairs(x, angle.cos().to(x.scalar_type()), angle.sin().to(x.scalar_type()), D);
  EXPECT_TRUE(test::all_close(y, test::rotated_reference(x_in, angle, D), 1e-5, 1e-6));
  auto dy = torch::randn_like(y);
  (y * dy).sum().backward();
  // The rotation is orthogonal: the gradient is dy rotated back.
  EXPECT_TRUE(test::all_close(x.grad(), test::rotated_reference(dy, -angle, D), 1e-5, 1e-6));
}

TEST(Rotary, FusedRotationEqualsComplexMultiplication) {
  torch::manual_seed(3);
  const int64_t N = 3, T = 7, D = 8;
  auto positions = torch::arange(5, 5 + T, torch::kFloat).unsqueeze(1);       // [T, 1]
  auto freqs = torch::pow(10000.0, -torch::arange(0, D, 2, torch::kFloat) / D);
  check(torch::randn({N, T, 2 * D}), positions * freqs, D);                 // shared angles, half copied
  check(torch::randn({N, T, D}), positions * freqs, D);                     // every feature rotated
  auto per_row = (torch::tensor({0.0f, 9.0f, 100.0f}).view({N, 1, 1}) + torch::arange(T, torch::kFloat).view({1, T, 1})) * freqs;
  check(torch::randn({N, T, 2 * D}), per_row, D);                           // each row its own positions
  check(torch::randn({N, 2 * D, T}).transpose(1, 2), positions * freqs, D); // not contiguous
  check(torch::randn({N, T, 2 * D}, torch::kDouble), positions * freqs, D); // the expression path
}

TEST(Rotary, FusedEqualsTheExpressionItReplaces) {
  torch::manual_seed(4);
  auto x = torch::randn({2, 9, 32});
  auto angle = torch::rand({9, 8}) * 50;
  auto c = angle.cos(), s = angle.sin();
  EXPECT_TRUE(test::all_close(rotate_pairs(x, c, s, 16), rotate_pairs_unfused(x, c, s, 16), 1e-6, 1e-6));
}

TEST(Rotary, RefusesBadShapes) {
  auto c = torch::zeros({7, 4});
  EXPECT_THROW(rotate_pairs(torch::zeros({2, 7, 6}), c, c, 8), c10::Error);   // D > F
  EXPECT_THROW(rotate_pairs(torch::zeros({2, 5, 16}), c, c, 8), c10::Error);  // T differs
}

}  // namespace
}  // namespace bakallm
