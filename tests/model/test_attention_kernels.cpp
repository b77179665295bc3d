// The model with its attention by blocks (ops/block_attention.h) against the
// same model with the dense attention: losses and every parameter's gradient
// at 1e-5 over three windows, with dropout, rows that start a new document
// mid-batch (they hide the cache), two heads, and the solidifier.
#include <gtest/gtest.h>

#include "model/baka_lm.h"
#include "ops/block_attention.h"
#include "small_config.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

struct Run {
  double loss;
  std::vector<torch::Tensor> grads;
};

Run run(const Config& c, AttentionKernel kernel) {
  set_attention_kernel(kernel);
  auto model = make_model(c, 31);
  model->train();
  torch::manual_seed(32);
  auto ids = torch::randint(0, c.vocab_size, {3, 3 * c.window_size}, torch::kLong);
  auto resets = torch::zeros({3, 3}, torch::kBool);
  resets[1][1] = true;  // row 1 starts a new document at window 1
  resets[2][2] = true;
  torch::manual_seed(33);  // the dropout's draws: the same for both
  auto out = model->forward_loss(ids, ids, State{}, resets);
  out.loss.backward();
  set_attention_kernel(AttentionKernel::kAuto);
  Run r{out.loss.item<double>(), {}};
  for (const auto& p : model->parameters()) r.grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return r;
}

void check(const Config& c) {
  const auto dense = run(c, AttentionKernel::kDense), blocks = run(c, AttentionKernel::kBlocks);
  EXPECT_NEAR(blocks.loss, dense.loss, 1e-5 * std::abs(dense.loss));
  ASSERT_EQ(blocks.grads.size(), dense.grads.size());
  for (size_t k = 0; k < dense.grads.size(); ++k)
    EXPECT_TRUE(test::all_close(blocks.grads[k], dense.grads[k], 1e-5, 1e-6)) << "parameter " << k;
}

Config config() {
  auto c = test::small_config(16, 2, 3, 24, 150, 40);  // windows of 150 (+8 rows): blocks of 128 and a partial one
  c.attn_dropout = 0.1;
  return c;
}

TEST(AttentionKernels, BlocksEqualDenseInTraining) { check(config()); }

TEST(AttentionKernels, BlocksEqualDenseWithTwoHeads) {
  auto c = config();
  c.num_heads = 2;
  check(c);
}

TEST(AttentionKernels, AutoTakesBlocksOnlyForLargeWeights) {
  const auto for_training = [](int64_t Tq, int64_t Tk) {
    return choose_attention_kernel(torch::kCPU, 1, Tq, Tk, /*inference=*/false);
  };
  EXPECT_EQ(for_training(1, 1 << 20), AttentionKernel::kDense);  // one row
  EXPECT_EQ(for_training(578, 1156), AttentionKernel::kDense);   // a tiny window: dense is fewer ops
  EXPECT_EQ(for_training(2048 + 66, 2 * (2048 + 66)), AttentionKernel::kBlocks);
  set_attention_kernel(AttentionKernel::kBlocks);  // fixed: whatever the shape
  EXPECT_EQ(for_training(1, 1), AttentionKernel::kBlocks);
  set_attention_kernel(AttentionKernel::kAuto);
}

}  // namespace
}  // namespace bakallm
