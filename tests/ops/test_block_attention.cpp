// Blockwise attention against the dense one it replaces (scores, mask,
// softmax, hashed dropout, product: what AttentionImpl computed before),
// forward and backward, at 1e-5: causal with a cache, rows that hide the
// cache, no mask (the solidifier), dropout, blocks that do not divide the
// lengths, and the blocks hidden by the causal mask skipped.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/block_attention.h"
#include "ops/dropout.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

// The dense attention: [G, Tq, Tk] scores, -inf where hidden, softmax, dropout, · V.
torch::Tensor dense(const torch::Tensor& q, const torch::Tensor& K, const torch::Tensor& V, const AttentionMask& m,
                    const BlockAttentionOptions& o) {
  auto s = torch::matmul(q, K.transpose(1, 2)) * o.scale;  // [G, Tq, Tk]
  const int64_t Tq = q.size(1), Tk = K.size(1);
  auto i = torch::arange(Tq).unsqueeze(1), j = torch::arange(Tk).unsqueeze(0);
  auto seen = torch::ones({q.size(0), Tq, Tk}, torch::kBool);
  if (m.causal) seen = seen.logical_and(j.le(i + m.before));
  if (m.keep_past.defined())
    seen = seen.logical_and(j.ge(m.past).logical_or(m.keep_past.view({-1, 1, 1})));
  s = s.masked_fill(seen.logical_not(), -std::numeric_limits<float>::infinity());
  return torch::matmul(hashed_dropout(torch::softmax(s, -1), o.dropout, o.training), V);
}

struct Case {
  int64_t G, Tq, Tk, F, Dv;
  AttentionMask mask;
  BlockAttentionOptions options;
};

void check(const Case& c) {
  torch::manual_seed(5);
  auto q = torch::randn({c.G, c.Tq, c.F}).requires_grad_();
  auto K = torch::randn({c.G, c.Tk, c.F}).requires_grad_();
  auto V = torch::randn({c.G, c.Tk, c.Dv}).requires_grad_();
  auto dO = torch::randn({c.G, c.Tq, c.Dv});
  auto grads = [&](const torch::Tensor& out) {
    auto g = torch::autograd::grad({out}, {q, K, V}, {dO});
    return std::vector<torch::Tensor>{out.detach(), g[0], g[1], g[2]};
  };
  torch::manual_seed(6);  // the dropout's seed: the same draw for both
  const auto expect = grads(dense(q, K, V, c.mask, c.options));
  torch::manual_seed(6);
  const auto got = grads(block_attention(q, K, V, c.mask, c.options));
  const char* names[] = {"out", "dq", "dK", "dV"};
  for (int k = 0; k < 4; ++k) EXPECT_TRUE(test::all_close(got[k], expect[k], 1e-5, 1e-5)) << names[k];
}

BlockAttentionOptions opts(double scale, int64_t block, double dropout = 0.0) {
  BlockAttentionOptions o;
  o.scale = scale;
  o.block = block;
  o.dropout = dropout;
  o.training = dropout > 0;
  return o;
}

TEST(BlockAttention, CausalAfterACacheEqualsDense) {
  // 37 rows after 40 keys (30 of them the previous window's), blocks of 16.
  check({3, 37, 77, 24, 12, AttentionMask{true, 40, 30, {}}, opts(1 / std::sqrt(24.0), 16)});
}

TEST(BlockAttention, RowsThatHideTheCacheEqualDense) {
  check({4, 37, 77, 24, 12, AttentionMask{true, 40, 30, torch::tensor({true, false, true, false})},
         opts(1 / std::sqrt(24.0), 16)});
}

TEST(BlockAttention, UnmaskedEqualsDense) {  // the solidifier: a few rows query every row
  check({2, 9, 50, 16, 8, AttentionMask{}, opts(0.25, 8)});
}

TEST(BlockAttention, DropoutEqualsDenseDropout) {
  check({3, 37, 77, 24, 12, AttentionMask{true, 40, 30, torch::tensor({true, false, true})},
         opts(1 / std::sqrt(24.0), 16, 0.2)});
}

TEST(BlockAttention, OneBlockAndFreshWindowEqualDense) {
  check({2, 20, 20, 8, 8, AttentionMask{true, 0, 0, {}}, opts(0.3, 128)});  // block larger than the lengths
  check({2, 20, 20, 8, 8, AttentionMask{true, 0, 0, {}}, opts(0.3, 1)});    // one row per block
}

TEST(BlockAttention, DataParallelRowsDropLikeOneProcess) {
  // Rank 1 of 2 holds matrices 2..3 of 4: its drops are those of the same rows in one process.
  torch::manual_seed(7);
  auto q = torch::randn({4, 10, 8}), K = torch::randn({4, 10, 8}), V = torch::randn({4, 10, 8});
  auto o = opts(0.35, 4, 0.3);
  o.batch = 4;
  torch::manual_seed(8);
  auto whole = block_attention(q, K, V, AttentionMask{true, 0, 0, {}}, o);
  o.batch = 2;
  set_dropout_first_row(2);
  torch::manual_seed(8);
  auto part = block_attention(q.narrow(0, 2, 2), K.narrow(0, 2, 2), V.narrow(0, 2, 2), AttentionMask{true, 0, 0, {}}, o);
  set_dropout_first_row(0);
  EXPECT_TRUE(test::all_close(part, whole.narrow(0, 2, 2), 1e-6, 1e-6));
}

// bfloat16 products (AMX where the CPU has it): both kernels round q, K, V and
// the weights to bfloat16 for their products, in different groupings, so each
// is held to the float32 result at bfloat16's precision, and to the other.
TEST(BlockAttention, Bfloat16ProductsStayWithinBfloat16OfFloat32) {
  torch::manual_seed(9);
  auto q = torch::randn({2, 37, 24}) * 0.3, K = torch::randn({2, 77, 24}) * 0.3, V = torch::randn({2, 77, 12});
  const AttentionMask mask{true, 40, 30, torch::tensor({true, false})};
  auto o = opts(1 / std::sqrt(24.0), 16);
  const auto exact = block_attention(q, K, V, mask, o);
  o.compute = torch::kBFloat16;
  const auto blocks = block_attention(q, K, V, mask, o);
  EXPECT_EQ(blocks.scalar_type(), torch::kFloat);
  EXPECT_TRUE(test::all_close(blocks, exact, 2e-2, 2e-2));
  EXPECT_FALSE(torch::equal(blocks, exact));  // the products did run in bfloat16
  // The dense path in bfloat16: scores and weights·V with bf16 operands.
  auto s = torch::matmul(q.to(torch::kBFloat16), K.to(torch::kBFloat16).transpose(1, 2)).to(torch::kFloat) * o.scale;
  auto i = torch::arange(37).unsqueeze(1), j = torch::arange(77).unsqueeze(0);
  auto seen = j.le(i + 40).unsqueeze(0).logical_and(j.ge(30).logical_or(mask.keep_past.view({-1, 1, 1})));
  auto w = torch::softmax(s.masked_fill(seen.logical_not(), -std::numeric_limits<float>::infinity()), -1);
  auto dense16 = torch::matmul(w.to(torch::kBFloat16), V.to(torch::kBFloat16)).to(torch::kFloat);
  EXPECT_TRUE(test::all_close(blocks, dense16, 2e-2, 2e-2));
  // Its backward, against float32's.
  auto grads = [&](torch::ScalarType compute) {
    auto qg = q.clone().requires_grad_(), Kg = K.clone().requires_grad_(), Vg = V.clone().requires_grad_();
    o.compute = compute;
    auto g = torch::autograd::grad({block_attention(qg, Kg, Vg, mask, o).square().sum()}, {qg, Kg, Vg});
    return g;
  };
  const auto g32 = grads(torch::kFloat), g16 = grads(torch::kBFloat16);
  for (int k = 0; k < 3; ++k) {
    const double scale = g32[k].abs().max().item<double>();
    EXPECT_LT((g16[k] - g32[k]).abs().max().item<double>(), 3e-2 * scale) << "gradient " << k;
  }
}

TEST(BlockAttention, RefusesBadShapes) {
  auto t = torch::zeros({2, 5, 4});
  EXPECT_THROW(block_attention(t, torch::zeros({2, 5, 3}), t, {}, {}), c10::Error);
  EXPECT_THROW(block_attention(t, t, t, AttentionMask{true, 0, 0, torch::ones({3}, torch::kBool)}, {}), c10::Error);
}

}  // namespace
}  // namespace bakallm
