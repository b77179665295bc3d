// The register-only loops bench measures the arithmetic's limit with: each
// does the multiply-adds it counts (its accumulators reach the closed form).
#include <gtest/gtest.h>

#include "ops/compute_limit.h"
#include "ops/cpu.h"

namespace bakallm {
namespace {

TEST(ComputeLimit, FmaLoopSumsWhatItCounts) {
  const auto loop = fma_loop(1000);
  if (cpu_isa() == Isa::kPortable) {
    EXPECT_EQ(loop.iterations, 0);  // no vector FMA to measure
    EXPECT_EQ(compute_flops_per_s(fma_loop, 2), 0.0);
    return;
  }
  EXPECT_EQ(loop.iterations, 1000);
  EXPECT_EQ(loop.value, 1000.0);  // each chain: 1000 times 1 · 1 added
  EXPECT_EQ(loop.flops_per_iteration, 2.0 * 12 * (cpu_isa() == Isa::kAvx512 ? 16 : 8));
  EXPECT_EQ(fma_loop(12345).value, 12345.0);
  EXPECT_GT(compute_flops_per_s(fma_loop, 2, 0.005), 0.0);
}

TEST(ComputeLimit, TileLoopSumsWhatItCounts) {
  const auto loop = tile_loop(1000);
  if (!amx_tiles_available()) {
    EXPECT_EQ(loop.iterations, 0);
    EXPECT_EQ(compute_flops_per_s(tile_loop, 2), 0.0);
    return;
  }
  EXPECT_EQ(loop.iterations, 1000);
  EXPECT_EQ(loop.value, 32.0 * 1000);  // a C element: 1000 times 32 products of ones
  EXPECT_EQ(loop.flops_per_iteration, 4 * 2.0 * 16 * 16 * 32);
  EXPECT_EQ(tile_loop(3).value, 96.0);
  EXPECT_GT(compute_flops_per_s(tile_loop, 2, 0.005), 0.0);
}

}  // namespace
}  // namespace bakallm
