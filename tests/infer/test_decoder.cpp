// The incremental decoder against the batched forward, position by position.
#include <gtest/gtest.h>

#include "device.h"
#include "infer/decoder.h"
#include "small_config.h"
#include "util/error.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

Config decode_config(MegaCache mega_cache = MegaCache::kPreviousLayerOutput) {
  auto c = test::small_config(32, 2, 3, 48, 5, 50);
  c.mega_cache = mega_cache;
  return c;
}

void check_against_forward(MegaCache mode, const std::vector<int64_t>& pieces) {
  auto model = make_model(decode_config(mode), 21);
  model->eval();
  model->to(test::device());
  torch::manual_seed(22);
  const int64_t B = 2, T = 23;  // 4 full windows of 5 and a partial one
  auto ids = torch::randint(0, 50, {B, T}, torch::kLong).to(test::device());
  torch::Tensor expect;
  {
    torch::NoGradGuard no_grad;
    expect = model(ids).logits;  // [B, T, V]
  }
  Decoder dec(model, B);
  int64_t p = 0;
  size_t k = 0;
  while (p < T) {
    const int64_t n = std::min(k < pieces.size() ? pieces[k++] : int64_t{1}, T - p);
    auto logits = dec.feed(ids.narrow(1, p, n));
    p += n;
    EXPECT_TRUE(test::all_close(logits, expect.select(1, p - 1), 1e-4, 1e-5)) << "after token " << p;
  }
  EXPECT_EQ(dec.tokens(), T);
}

TEST(Decoder, TokenByTokenEqualsTheForward) { check_against_forward(MegaCache::kPreviousLayerOutput, {}); }
TEST(Decoder, PrefillThenTokens) { check_against_forward(MegaCache::kPreviousLayerOutput, {12, 1, 1, 3, 5}); }
TEST(Decoder, PrefillOfWholeWindows) { check_against_forward(MegaCache::kPreviousLayerOutput, {10, 2, 5, 5}); }
TEST(Decoder, LayerInputCache) { check_against_forward(MegaCache::kPreviousLayerInput, {7, 1, 1, 1}); }

TEST(Decoder, StateAtBoundaryEqualsTheForwards) {
  auto model = make_model(decode_config(), 23);
  model->eval();
  auto ids = torch::randint(0, 50, {1, 15}, torch::kLong);
  Decoder dec(model, 1);
  for (int64_t t = 0; t < 15; ++t) dec.feed(ids.narrow(1, t, 1));
  torch::NoGradGuard no_grad;
  auto full = model(ids);
  EXPECT_TRUE(test::all_close(dec.boundary_state().memory, full.state.memory, 1e-4, 1e-5));
  EXPECT_EQ(dec.boundary_state().seen, 15);
}

// bfloat16 weights: every product's weight rounded to 8 mantissa bits, so the
// logits move by about that much relative to their scale, and no further.
TEST(Decoder, Bfloat16WeightsStayClose) {
  auto exact = make_model(decode_config(), 25);
  auto rounded = make_model(decode_config(), 25);
  exact->eval();
  rounded->eval();
  rounded->store_linear_weights(torch::kBFloat16);
  EXPECT_EQ(rounded->embed_out->weight.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(rounded->lm_norm->weight.scalar_type(), torch::kFloat);
  auto ids = torch::randint(0, 50, {2, 13}, torch::kLong);
  Decoder a(exact, 2), b(rounded, 2);
  for (int64_t t = 0; t < 13; ++t) {
    auto la = a.feed(ids.narrow(1, t, 1)), lb = b.feed(ids.narrow(1, t, 1));
    EXPECT_EQ(lb.scalar_type(), torch::kFloat);
    const double scale = la.abs().max().item<double>();
    EXPECT_LT((la - lb).abs().max().item<double>(), 0.03 * scale) << "after token " << t + 1;
  }
}

}  // namespace
}  // namespace bakallm
