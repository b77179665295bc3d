// The incremental decoder against the batched forward, position by position.
#include <gtest/gtest.h>

#include "device.h"
#include "infer/decoder.h"
#include "ops/block_attention.h"
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
// Each attention kernel of decoding: the row kernel (the default for a few
// rows on an AVX-512 CPU; forced here for every piece, prefill included) and
// the dense products.
TEST(Decoder, RowAttentionEqualsTheForward) {
  set_attention_kernel(AttentionKernel::kRows);
  check_against_forward(MegaCache::kPreviousLayerOutput, {12, 1, 1, 3, 5});
  set_attention_kernel(AttentionKernel::kAuto);
}
TEST(Decoder, DenseAttentionEqualsTheForward) {
  set_attention_kernel(AttentionKernel::kDense);
  check_against_forward(MegaCache::kPreviousLayerOutput, {12, 1, 1, 3, 5});
  set_attention_kernel(AttentionKernel::kAuto);
}
// What the next token's attention reads: nothing before a window is open,
// then one more key (2D) and value (D) per layer with each token.
TEST(Decoder, AttendedBytesGrowByOneKeyAndValuePerLayer) {
  const auto c = decode_config();
  auto model = make_model(c, 23);
  model->eval();
  Decoder dec(model, 1);
  EXPECT_EQ(dec.attended_bytes(), 0);
  dec.feed(torch::tensor({{3}}, torch::kLong));
  const int64_t before = dec.attended_bytes();
  EXPECT_GT(before, 0);
  dec.feed(torch::tensor({{4}}, torch::kLong));
  EXPECT_EQ(dec.attended_bytes() - before, c.num_layers * 3 * c.hidden_dim * 4);
}

// A bfloat16 cache (what bfloat16 and int8 weights bring): each token reads
// half the bytes; the logits move by about the rounding of the keys and
// values, under either kernel that reads them (the rows read bfloat16, the
// dense products widen it); the cache handed to the next window is float32.
TEST(Decoder, Bfloat16CacheHalvesTheReadsAndStaysClose) {
  auto exact = make_model(decode_config(), 24), half = make_model(decode_config(), 24);
  exact->eval();
  half->eval();
  half->model->set_cache_dtype(torch::kBFloat16);
  const auto ids = torch::randint(0, 50, {2, 13}, torch::kLong);
  for (auto kernel : {AttentionKernel::kRows, AttentionKernel::kDense}) {
    set_attention_kernel(kernel);
    Decoder a(exact, 2), b(half, 2);
    bool moved = false;
    for (int64_t t = 0; t < ids.size(1); ++t) {
      const auto la = a.feed(ids.narrow(1, t, 1)), lb = b.feed(ids.narrow(1, t, 1));
      const double scale = la.abs().max().item<double>();
      EXPECT_LT((la - lb).abs().max().item<double>(), 0.01 * scale) << "after token " << t + 1;
      moved = moved || !torch::equal(la, lb);
      EXPECT_EQ(2 * b.attended_bytes(), a.attended_bytes()) << "after token " << t + 1;
    }
    EXPECT_TRUE(moved);
    for (const auto& l : b.boundary_state().layers) {  // two windows closed
      EXPECT_EQ(l.k.scalar_type(), torch::kFloat);
      EXPECT_EQ(l.v.scalar_type(), torch::kFloat);
    }
  }
  set_attention_kernel(AttentionKernel::kAuto);
}

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

// Streams at different places in their windows (fresh, mid-window, at a
// boundary, with and without a cache; one of two rows) read one token each as
// rows of one batch, their windows closing at different steps: every row's
// logits equal its decoder's own feed, and the streams stay exact afterwards.
void check_feed_together(Config config) {
  auto model = make_model(config, 27);
  model->eval();
  model->to(test::device());
  torch::manual_seed(28);
  const std::vector<int64_t> batch = {1, 2, 1, 1, 1}, prefill = {0, 3, 5, 7, 12};
  const int64_t steps = 11;
  std::vector<std::unique_ptr<Decoder>> together, alone;
  std::vector<torch::Tensor> ids;
  for (size_t j = 0; j < batch.size(); ++j) {
    ids.push_back(torch::randint(0, 50, {batch[j], prefill[j] + steps}, torch::kLong).to(test::device()));
    together.push_back(std::make_unique<Decoder>(model, batch[j]));
    alone.push_back(std::make_unique<Decoder>(model, batch[j]));
    if (prefill[j] == 0) continue;
    together[j]->feed(ids[j].narrow(1, 0, prefill[j]));
    alone[j]->feed(ids[j].narrow(1, 0, prefill[j]));
  }
  std::vector<Decoder*> stack;
  for (auto& d : together) stack.push_back(d.get());
  for (int64_t t = 0; t < steps; ++t) {
    std::vector<torch::Tensor> step_ids, expect;
    for (size_t j = 0; j < batch.size(); ++j) {
      auto id = ids[j].narrow(1, prefill[j] + t, 1);  // [B_j, 1]
      step_ids.push_back(id.reshape({-1}));
      expect.push_back(alone[j]->feed(id));
    }
    auto logits = Decoder::feed_together(stack, torch::cat(step_ids));
    EXPECT_TRUE(test::all_close(logits, torch::cat(expect), 1e-4, 1e-5)) << "step " << t;
    for (size_t j = 0; j < batch.size(); ++j) EXPECT_EQ(together[j]->tokens(), prefill[j] + t + 1);
  }
  for (size_t j = 0; j < batch.size(); ++j) {  // afterwards each goes on alone, as its twin does
    auto next = torch::randint(0, 50, {batch[j], 4}, torch::kLong).to(test::device());
    EXPECT_TRUE(test::all_close(together[j]->feed(next), alone[j]->feed(next), 1e-4, 1e-5)) << "stream " << j;
  }
}

TEST(Decoder, StreamsReadTogetherEqualEachAlone) { check_feed_together(decode_config()); }
TEST(Decoder, StreamsReadTogetherLayerInputCache) { check_feed_together(decode_config(MegaCache::kPreviousLayerInput)); }
TEST(Decoder, StreamsReadTogetherWithoutEma) {
  auto c = decode_config();
  c.ema_input = EmaInput::kNone;
  check_feed_together(c);
}
TEST(Decoder, StreamsReadTogetherWithTwoHeads) {
  auto c = decode_config();
  c.num_heads = 2;
  check_feed_together(c);
}

TEST(Decoder, GptNeoxStreamsReadTogetherEqualEachAlone) {  // read one after the other: nothing to stack
  auto c = config_from_json({{"model_type", "gpt_neox"}, {"hidden_size", 16}, {"num_hidden_layers", 2},
                             {"num_attention_heads", 2}, {"intermediate_size", 32}, {"vocab_size", 50},
                             {"max_position_embeddings", 5}, {"rotary_pct", 0.5}},
                            "test");
  check_feed_together(c);
}

TEST(Decoder, StreamsReadTogetherRefuseAMismatch) {
  auto model = make_model(decode_config(), 29), other = make_model(decode_config(), 29);
  Decoder a(model, 1), b(model, 2), c(other, 1);
  EXPECT_THROW(Decoder::feed_together({&a, &b}, torch::zeros({2}, torch::kLong)), c10::Error);  // 3 rows
  EXPECT_THROW(Decoder::feed_together({&a, &c}, torch::zeros({2}, torch::kLong)), c10::Error);
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
  Decoder probe(rounded, 1);  // the keys and values follow the weights into bfloat16
  probe.feed(torch::tensor({{3}}, torch::kLong));
  Decoder probe_exact(exact, 1);
  probe_exact.feed(torch::tensor({{3}}, torch::kLong));
  EXPECT_EQ(2 * probe.attended_bytes(), probe_exact.attended_bytes());
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
