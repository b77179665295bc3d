// Q8_0 weights: the rounding bound, the int8 kernel against a float64
// product of the dequantized weight, and a model in 8 bits: the decoder
// equals its forward, and its loss is within 1% of float32's.
#include <gtest/gtest.h>

#include "infer/decoder.h"
#include "model/baka_lm.h"
#include "model/flops.h"
#include "ops/q8.h"
#include "small_config.h"
#include "util/error.h"

namespace bakallm {
namespace {

TEST(Q8, RoundsEachBlockToHalfItsScale) {
  torch::manual_seed(0);
  auto w = torch::randn({7, 96}) * torch::rand({7, 1}) * 3;
  w.narrow(1, 32, 32).select(0, 2).zero_();  // an all-zero block: scale 0, no NaN
  const auto q = quantize_q8(w);
  EXPECT_EQ(q.q.scalar_type(), torch::kChar);
  EXPECT_EQ(q.scales.sizes(), (std::vector<int64_t>{7, 3}));
  EXPECT_LE(q.q.abs().max().item<int>(), 127);
  EXPECT_EQ(q.scales[2][1].item<float>(), 0.0f);
  const auto err = (dequantize_q8(q) - w).abs().view({7, 3, 32});
  EXPECT_TRUE((err <= q.scales.unsqueeze(-1) * 0.5 + 1e-7).all().item<bool>());
  EXPECT_EQ(q.bytes(), 7 * 96 + 7 * 3 * 4);
  EXPECT_THROW(quantize_q8(torch::randn({4, 40})), c10::Error);  // 40 columns: not whole blocks
}

// Few rows run the int8 kernel, many the dequantize-and-multiply path: both
// equal the float64 product with the dequantized weight.
TEST(Q8, ProductEqualsTheDequantizedWeightsProduct) {
  torch::manual_seed(1);
  const auto w = quantize_q8(torch::randn({50, 160}));
  const auto exact_w = dequantize_q8(w).to(torch::kDouble);
  for (int64_t rows : {1, 3, 5, 8, 16, 40}) {  // 2 x rows: 2..16 through the kernel (tiles of 4 and the rest)
    const auto a = torch::randn({2, rows, 160});
    const auto y = matmul_nt_q8(a, w);
    ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, rows, 50}));
    const auto want = torch::matmul(a.to(torch::kDouble), exact_w.t());
    EXPECT_TRUE(torch::allclose(y.to(torch::kDouble), want, 1e-5, 1e-5)) << rows << " rows";
  }
}

BakaLM int8_model() {
  auto model = make_model(test::small_config(32, 2, 2, 64, 8, 48), 3);
  model->eval();
  return model;
}

// One forward: the decoder of an 8-bit model gives its forward's logits.
TEST(Q8, DecoderOfAnInt8ModelEqualsItsForward) {
  auto model = int8_model();
  const auto params_before = parameter_groups(model).back().second;
  use_weights(model, "int8");
  model->model->set_cache_dtype(std::nullopt);  // the keys and values as the forward keeps them (int8 brings bfloat16)
  EXPECT_EQ(parameter_groups(model).back().second, params_before);  // counted as parameters still
  const auto ids = torch::randint(3, 48, {1, 21});
  const auto logits = model->forward(ids, State{}).logits;  // [1, 21, V]
  Decoder decoder(model, 1);
  for (int64_t t = 0; t < ids.size(1); ++t) {
    const auto step = decoder.feed(ids.narrow(1, t, 1));
    EXPECT_TRUE(torch::allclose(step, logits.select(1, t), 1e-5, 1e-5)) << "token " << t;
  }
}

TEST(Q8, LossWithinOnePercentOfFloat32) {
  auto f32 = int8_model(), q8 = int8_model();
  use_weights(q8, "int8");
  const auto ids = torch::randint(3, 48, {2, 40});
  const double a = next_token_loss(f32->forward(ids, State{}).logits, ids).item<double>();
  const double b = next_token_loss(q8->forward(ids, State{}).logits, ids).item<double>();
  EXPECT_LT(std::abs(b - a) / a, 0.01) << a << " " << b;
  EXPECT_NE(a, b);  // the weights did change
  EXPECT_THROW(use_weights(q8, "int4"), Error);
}

}  // namespace
}  // namespace bakallm
