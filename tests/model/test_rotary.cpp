// The rotary module's table of cos and sin by position (model/rotary.h):
// shared and per-row starts, positions past the first table (it grows), and
// a freqs buffer changed after the table was made (an import copies one in),
// each against the angles computed directly, in float64.
#include <gtest/gtest.h>

#include "model/rotary.h"
#include "rotary_reference.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

// x [B, T, 2D] rotated by position pos[b, t] (the first D features, pairs as
// complex numbers). The angle pos · f_j is a float32 product, as the
// prototype's (far positions lose digits there); the rest is float64.
torch::Tensor expected(const torch::Tensor& x, const torch::Tensor& pos, const torch::Tensor& freqs) {
  const auto angle = pos.to(torch::kFloat).unsqueeze(-1) * freqs;  // [B, T, D/2]
  return test::rotated_reference(x, angle, freqs.size(0) * 2);
}

TEST(RotaryTable, SharedAndPerRowStartsAtAnyPosition) {
  torch::manual_seed(6);
  Rotary rotary(16, 10000.0);
  const int64_t B = 3, T = 5;
  const auto x = torch::randn({B, T, 32});
  for (int64_t start : {0, 7, 1020, 5000}) {  // 1020 + 5 crosses the first table's end; 5000 grows it
    const auto pos = torch::arange(start, start + T).expand({B, T});
    EXPECT_TRUE(test::all_close(rotary->forward(x, start), expected(x, pos, rotary->freqs), 1e-5, 1e-5)) << start;
  }
  const auto starts = torch::tensor({3, 0, 9000}, torch::kLong);
  const auto pos = starts.unsqueeze(1) + torch::arange(T).unsqueeze(0);  // [B, T]
  EXPECT_TRUE(test::all_close(rotary->forward(x, starts), expected(x, pos, rotary->freqs), 1e-5, 1e-5));
}

TEST(RotaryTable, FollowsACopiedInFreqsBuffer) {
  torch::manual_seed(7);
  Rotary rotary(16, 10000.0);
  const auto x = torch::randn({1, 4, 32});
  rotary->forward(x, 2);  // makes the table
  {
    torch::NoGradGuard no_grad;
    rotary->freqs.copy_(RotaryImpl::make_freqs(16, 500.0));
  }
  const auto pos = torch::arange(2, 6).unsqueeze(0);
  EXPECT_TRUE(test::all_close(rotary->forward(x, 2), expected(x, pos, rotary->freqs), 1e-5, 1e-5));
}

// A decoder (c10::InferenceMode) reads the table first, training after: the
// rows it hands each must suit its mode (inference tensors can't be saved
// for a backward), and decoding's are views made in place.
TEST(RotaryTable, DecodingFirstThenTraining) {
  torch::manual_seed(8);
  Rotary rotary(16, 10000.0);
  const auto x = torch::randn({1, 3, 32});
  const auto pos = torch::arange(4, 7).unsqueeze(0);
  {
    c10::InferenceMode inference;
    const auto a = rotary->angles(x, 4);
    EXPECT_TRUE(a.cos.is_inference());
    EXPECT_TRUE(test::all_close(rotary->forward(x, 4), expected(x, pos, rotary->freqs), 1e-5, 1e-5));
  }
  const auto leaf = x.clone().requires_grad_();
  const auto a = rotary->angles(leaf, 4);
  EXPECT_FALSE(a.cos.is_inference());
  const auto y = rotary->forward(leaf, 4);
  EXPECT_TRUE(test::all_close(y.detach(), expected(x, pos, rotary->freqs), 1e-5, 1e-5));
  y.sum().backward();
  EXPECT_TRUE(leaf.grad().defined());
}

}  // namespace
}  // namespace bakallm
