// bench's training measurement (bench/benchmark.h): its steps run the
// products flops_per_token counts, which MFU divides by. Each step carries
// the stream's state to the next, as the trainer does, so every window after
// the first step attends to its cache and gates it; steps from a fresh state
// had run ~10% fewer FLOPs than counted (here 10.4%, tiny 10%), and MFU
// read that much high. The count takes each backward as twice its forward;
// a product whose input wants no gradient (the detached cache's gates in a
// step's first window) skips dx, so the products run a few percent fewer
// (here 3.7%, tiny 1.5%).
#include <gtest/gtest.h>

#include "bench/benchmark.h"
#include "model/flops.h"
#include "ops/matmul.h"
#include "small_config.h"

namespace bakallm {
namespace {

TEST(Bench, TrainingStepsRunTheFlopsMfuCounts) {
  ASSERT_TRUE(onednn_enabled()) << "the products are counted inside oneDNN";
  BenchOptions o;
  o.config = test::small_config(/*D=*/64, /*L=*/2, /*M=*/4, /*I=*/256, /*W=*/32, /*V=*/512);
  o.train_rows = 2;
  o.train_steps = 2;
  o.decode_windows = {};
  o.attention_windows = {};
  o.bf16 = false;
  const auto j = run_benchmarks(o);
  const double counted = flops_per_token(o.config).training_per_token;
  const double ran = j.at("train").at("float32").at("product_flops_per_token").get<double>();
  EXPECT_NEAR(ran / counted, 1.0, 0.05) << "ran " << ran << " FLOPs a token, counted " << counted;
}

}  // namespace
}  // namespace bakallm
