// attention_weights against the five libtorch ops it replaces (the product
// by the scale, the mask, softmax, hashed dropout), forward and backward, in
// each instruction set's loops, at 1e-5: causal after a cache, rows that hide
// the cache, no mask, dropout, data-parallel rows, heads; and the libtorch
// path it keeps for other dtypes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ops/attention_weights.h"
#include "ops/dropout.h"
#include "isas.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

// The dense attention's weights as libtorch ops: [G, Tq, Tk], dim 0 of the dropped tensor the batch.
torch::Tensor weights_by_ops(const torch::Tensor& s, const AttentionMask& m, const AttentionWeightsOptions& o) {
  const int64_t G = s.size(0), Tq = s.size(1), Tk = s.size(2);
  auto i = torch::arange(Tq).unsqueeze(1), j = torch::arange(Tk).unsqueeze(0);
  auto seen = torch::ones({G, Tq, Tk}, torch::kBool);
  if (m.causal) seen = seen.logical_and(j.le(i + m.before));
  if (m.keep_past.defined()) seen = seen.logical_and(j.ge(m.past).logical_or(m.keep_past.view({-1, 1, 1})));
  auto x = (s * o.scale).masked_fill(seen.logical_not(), -std::numeric_limits<double>::infinity());
  auto w = torch::softmax(x, -1);
  return hashed_dropout(w.view({o.batch, -1, Tq, Tk}), o.dropout, o.training).view({G, Tq, Tk});
}

AttentionWeightsOptions weight_opts(double scale, double dropout = 0.0, int64_t batch = 1) {
  AttentionWeightsOptions o;
  o.scale = scale;
  o.dropout = dropout;
  o.training = dropout > 0;
  o.batch = batch;
  return o;
}

// Weights and the scores' gradient under a random upstream gradient, both ways, in every instruction set.
void check_weights(int64_t G, int64_t Tq, int64_t Tk, const AttentionMask& m, const AttentionWeightsOptions& o,
           torch::ScalarType dtype = torch::kFloat) {
  torch::manual_seed(3);
  const auto s = (torch::randn({G, Tq, Tk}) * 4).to(dtype);
  const auto dw = torch::randn({G, Tq, Tk}).to(dtype);
  auto run = [&](bool fused) {
    auto x = s.clone().requires_grad_();
    torch::manual_seed(4);  // the dropout's seed: the same draw both ways
    auto w = fused ? attention_weights(x, m, o) : weights_by_ops(x, m, o);
    auto g = torch::autograd::grad({w}, {x}, {dw})[0];
    return std::pair{w.detach(), g};
  };
  const auto [w0, g0] = run(false);
  for (Isa isa : test::isas()) {
    test::KernelIsa on(isa);
    const auto [w, g] = run(true);
    EXPECT_EQ(w.scalar_type(), dtype);
    EXPECT_TRUE(test::all_close(w, w0, 1e-5, 1e-6)) << "weights, " << isa_name(isa);
    EXPECT_TRUE(test::all_close(g, g0, 1e-5, 1e-6)) << "gradient, " << isa_name(isa);
  }
}

// BFloat16 scores: the weights and the scores' gradient come back in
// bfloat16, computed in float32 from the bfloat16 values and rounded once,
// the backward from the bfloat16 P the forward returned. Against the ops in
// float32 on the same values, elementwise: the weights within their rounding
// (2^-8 relative: half a bfloat16 step, and exp's last float bit); the
// gradient scale·P ⊙ (dP − rowsum(P ⊙ dP)) within its rounding and P's
// (2^-7 relative), plus what P's rounding moves the row sum by (at most
// 2^-9 of max|dP| for each weight, times scale·P).
void check_bfloat16_weights(int64_t G, int64_t Tq, int64_t Tk, const AttentionMask& m,
                            const AttentionWeightsOptions& o) {
  torch::manual_seed(3);
  const auto s = (torch::randn({G, Tq, Tk}) * 4).to(torch::kBFloat16);
  const auto dw = torch::randn({G, Tq, Tk}).to(torch::kBFloat16);
  auto x0 = s.to(torch::kFloat).requires_grad_();
  torch::manual_seed(4);
  const auto w0 = weights_by_ops(x0, m, o);
  const auto g0 = torch::autograd::grad({w0}, {x0}, {dw.to(torch::kFloat)})[0];
  torch::manual_seed(4);
  const auto p0 = weights_by_ops(x0.detach(), m, weight_opts(o.scale)).detach();  // P before the dropout
  const double most_dw = dw.abs().max().item<double>() * (o.training && o.dropout > 0 ? 1 / (1 - o.dropout) : 1.0);
  const auto w_tol = w0.detach().abs() * std::ldexp(1.0, -8) + 1e-7;
  const auto g_tol = g0.abs() * std::ldexp(1.0, -7) + p0 * (o.scale * most_dw * std::ldexp(1.0, -9)) + 1e-6;
  for (Isa isa : test::isas()) {
    test::KernelIsa on(isa);
    auto x = s.clone().requires_grad_();
    torch::manual_seed(4);
    const auto w = attention_weights(x, m, o);
    const auto g = torch::autograd::grad({w}, {x}, {dw})[0];
    ASSERT_EQ(w.scalar_type(), torch::kBFloat16);
    ASSERT_EQ(g.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE((w.to(torch::kFloat) - w0).abs().le(w_tol).all().item<bool>())
        << "weights, " << isa_name(isa) << ": worst " << ((w.to(torch::kFloat) - w0).abs() / w_tol).max().item<double>();
    EXPECT_TRUE((g.to(torch::kFloat) - g0).abs().le(g_tol).all().item<bool>())
        << "gradient, " << isa_name(isa) << ": worst " << ((g.to(torch::kFloat) - g0).abs() / g_tol).max().item<double>();
  }
}

TEST(AttentionWeights, BFloat16ScoresGiveBFloat16WeightsAndGradient) {
  check_bfloat16_weights(3, 37, 77, AttentionMask{true, 40, 30, {}}, weight_opts(1 / std::sqrt(24.0)));
  check_bfloat16_weights(4, 37, 77, AttentionMask{true, 40, 30, torch::tensor({true, false, true, false})},
                         weight_opts(0.2));
  check_bfloat16_weights(2, 9, 50, AttentionMask{}, weight_opts(0.25));
  check_bfloat16_weights(3, 37, 77, AttentionMask{true, 40, 30, torch::tensor({true, false, true})},
                         weight_opts(0.2, 0.2, 3));  // dropout
}

TEST(AttentionWeights, CausalAfterACacheEqualsTheOps) {
  // 37 rows after 40 keys (30 of them the previous window's): rows of every length against the vector width
  check_weights(3, 37, 77, AttentionMask{true, 40, 30, {}}, weight_opts(1 / std::sqrt(24.0)));
}

TEST(AttentionWeights, RowsThatHideTheCacheEqualTheOps) {
  check_weights(4, 37, 77, AttentionMask{true, 40, 30, torch::tensor({true, false, true, false})}, weight_opts(0.2));
}

TEST(AttentionWeights, UnmaskedEqualsTheOps) {  // the solidifier: every key seen
  check_weights(2, 9, 50, AttentionMask{}, weight_opts(0.25));
}

TEST(AttentionWeights, FreshWindowAndOneKeyEqualTheOps) {
  check_weights(2, 20, 20, AttentionMask{true, 0, 0, {}}, weight_opts(0.3));  // the first row sees one key
  check_weights(1, 1, 1, AttentionMask{true, 0, 0, {}}, weight_opts(0.3));
}

TEST(AttentionWeights, DropoutEqualsHashedDropout) {
  check_weights(3, 37, 77, AttentionMask{true, 40, 30, torch::tensor({true, false, true})}, weight_opts(0.2, 0.2, 3));
  check_weights(6, 17, 33, AttentionMask{true, 16, 0, {}}, weight_opts(0.2, 0.3, 2));  // 2 rows of 3 heads
}

TEST(AttentionWeights, DropsSomethingAndScalesTheRest) {
  torch::manual_seed(5);
  auto s = torch::zeros({2, 30, 30});  // every visible weight of row i: 1/(i+1)
  auto w = attention_weights(s, AttentionMask{true, 0, 0, {}}, weight_opts(1.0, 0.5, 2));
  auto expect = torch::ones({30, 30}).tril() / torch::arange(1, 31, torch::kFloat).unsqueeze(1) * 2.0;
  const auto kept = w.ne(0);
  EXPECT_GT(kept.sum().item<int64_t>(), 300);
  EXPECT_LT(kept.sum().item<int64_t>(), 630);
  EXPECT_TRUE(torch::allclose(w.masked_select(kept), expect.expand({2, 30, 30}).masked_select(kept)));
}

TEST(AttentionWeights, DataParallelRowsDropLikeOneProcess) {
  // Rank 1 of 2 holds batch rows 2..3 of 4 (each 2 heads): its drops are those of the same rows in one process.
  torch::manual_seed(7);
  auto s = torch::randn({8, 10, 10});
  const AttentionMask m{true, 0, 0, {}};
  torch::manual_seed(8);
  auto whole = attention_weights(s, m, weight_opts(0.35, 0.3, 4));
  set_dropout_first_row(2);
  torch::manual_seed(8);
  auto part = attention_weights(s.narrow(0, 4, 4).contiguous(), m, weight_opts(0.35, 0.3, 2));
  set_dropout_first_row(0);
  EXPECT_TRUE(torch::equal(part, whole.narrow(0, 4, 4)));
}

TEST(AttentionWeights, DoubleRunsTheOps) {  // gradient checks: double stays double
  check_weights(2, 7, 12, AttentionMask{true, 5, 3, torch::tensor({false, true})}, weight_opts(0.4), torch::kDouble);
}

TEST(AttentionWeights, RefusesBadShapes) {
  EXPECT_THROW(attention_weights(torch::zeros({2, 3}), AttentionMask{}, weight_opts(1.0)), c10::Error);
  EXPECT_THROW(attention_weights(torch::zeros({3, 2, 2}), AttentionMask{}, weight_opts(1.0, 0.0, 2)), c10::Error);
}

}  // namespace
}  // namespace bakallm
