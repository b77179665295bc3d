#include "ops/row_product.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/decode_pool.h"
#include "ops/simd.h"

namespace bakallm {

namespace {

constexpr int64_t kBlock = 32;  // K is read 32 values at a time (a Q8_0 block)

// A weight [N, K] of element E (float, bfloat16 bits, or Q8_0's int8 with a
// scale per block of 32: SCALES [N, K/32], null unscaled): where weight
// (n, k) lies, in its own type (the loads of ops/simd.h widen it to float32),
// and its block's scale.
template <class E, bool Scaled>
struct Weights {
  const E* w;
  int64_t K;
  const float* scales = nullptr;
  const E* at(int64_t n, int64_t k) const { return w + n * K + k; }
  float scale(int64_t n, int64_t b) const { return scales[n * (K / kBlock) + b]; }
  const char* address(int64_t n, int64_t b) const { return reinterpret_cast<const char*>(at(n, b * kBlock)); }
  static constexpr bool kScaled = Scaled;
  static constexpr int kBlockBytes = kBlock * sizeof(E);
  static constexpr bool kPrefetched = sizeof(E) < sizeof(float);  // ahead of the loads (row_product_loops.inc)
};
using FloatWeights = Weights<float, false>;
using BFloat16Weights = Weights<uint16_t, false>;
using Q8Weights = Weights<int8_t, true>;

#define BAKALLM_SIMD_LOOPS "ops/row_product_loops.inc"
#include "ops/simd_targets.inc"

template <class W>
void run(const float* a, int64_t M, int64_t K, const W& w, float* y, int64_t N, Isa isa) {
  const int64_t bytes_per_weight = W::kBlockBytes / kBlock;
  // About 64 kB of weights per task: a tiny layer's 320 x 320 float32 product splits in two.
  const int64_t grain = std::max<int64_t>(4, (int64_t{1} << 16) / (K * bytes_per_weight));
  // Decoding: halves on the decode pool, whose worker then streams its half
  // of the next product (ops/decode_pool.h), in units of 4 columns: every
  // set's tile (rows()), so no column is summed alone but the last few of N.
  parallel_rows(M, 0, N, grain, [&](int64_t n0, int64_t n1) { BAKALLM_ON_ISA(isa, rows(a, M, K, w, y, N, n0, n1)); },
                StreamedRows{w.w, K * bytes_per_weight, 4});
}

// The N values of X rounded to the nearest bfloat16 (ties to even), as
// c10::BFloat16 rounds, in place; NaN stays NaN. Without a branch, so the
// compiler vectorizes it.
void round_to_bfloat16(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    u = (u & 0x7fffffffu) > 0x7f800000u ? u : rounded;
    std::memcpy(x + i, &u, sizeof u);
  }
}

}  // namespace

void row_product(const float* a, int64_t M, int64_t K, const void* w, const float* scales, RowWeights kind, float* y,
                 int64_t N, Isa isa) {
  switch (kind) {
    case RowWeights::kFloat: run(a, M, K, FloatWeights{static_cast<const float*>(w), K}, y, N, isa); break;
    case RowWeights::kBFloat16: {  // both operands in bfloat16: the rows in paired order (ops/simd.h), rounded
      thread_local std::vector<float> paired;
      if (static_cast<int64_t>(paired.size()) < M * K) paired.resize(M * K);  // grown only: no fill between sizes
      for (int64_t i = 0; i < M; ++i) to_paired_order(a + i * K, K, isa_lanes(isa), paired.data() + i * K);
      round_to_bfloat16(paired.data(), M * K);
      run(paired.data(), M, K, BFloat16Weights{static_cast<const uint16_t*>(w), K}, y, N, isa);
      break;
    }
    case RowWeights::kQ8: run(a, M, K, Q8Weights{static_cast<const int8_t*>(w), K, scales}, y, N, isa); break;
  }
}

}  // namespace bakallm
