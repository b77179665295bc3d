// What the AVX-512 kernels share (ops/avx512.h): exp16 against exp in double
// over a sweep of the whole float range, and at its edges.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "ops/avx512.h"
#include "ops/cpu.h"

namespace bakallm {
namespace {

BAKALLM_AVX512 void exp16_of(const float* in, float* out) { _mm512_storeu_ps(out, exp16(_mm512_loadu_ps(in))); }

// |got − want| in units in the last place of want rounded to float32
// (denormal spacing below the normal range).
double ulps(float got, double want) {
  const float w = static_cast<float>(want);
  if (std::isinf(w)) return got == w ? 0 : std::numeric_limits<double>::infinity();
  const double spacing = std::nextafter(std::fabs(w), std::numeric_limits<float>::infinity()) - std::fabs(w);
  return std::fabs(static_cast<double>(got) - want) / spacing;
}

TEST(Exp16, WithinOneUlpOverTheFloatRange) {
  if (!cpu_has_avx512()) GTEST_SKIP() << "this CPU has no AVX-512";
  double worst = 0;
  float worst_at = 0;
  float in[16], out[16];
  // every 4099th bit pattern (positive and negative, NaNs included): ~1 M values, 16 a call
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32);) {
    for (int k = 0; k < 16; ++k, bits += 4099) {
      const auto b = static_cast<uint32_t>(bits);
      std::memcpy(&in[k], &b, sizeof b);
    }
    exp16_of(in, out);
    for (int k = 0; k < 16; ++k) {
      if (std::isnan(in[k])) {
        EXPECT_TRUE(std::isnan(out[k])) << in[k];
        continue;
      }
      const double u = ulps(out[k], std::exp(static_cast<double>(in[k])));
      if (u > worst) worst = u, worst_at = in[k];
    }
  }
  EXPECT_LE(worst, 1.01) << "at " << worst_at;
}

TEST(Exp16, Edges) {
  if (!cpu_has_avx512()) GTEST_SKIP() << "this CPU has no AVX-512";
  const float inf = std::numeric_limits<float>::infinity();
  const float in[16] = {-inf, inf, 0.0f, -0.0f, 88.72f, 88.73f, 1000.0f, -87.33f,
                        -103.9f, -104.0f, -1000.0f, 1.0f, -1.0f, 1e-8f, -1e-8f, 0.5f};
  float out[16];
  exp16_of(in, out);
  EXPECT_EQ(out[0], 0.0f);  // a masked score
  EXPECT_EQ(out[1], inf);
  EXPECT_EQ(out[2], 1.0f);
  EXPECT_EQ(out[3], 1.0f);
  EXPECT_EQ(out[4], std::exp(88.72f));  // the largest finite results
  EXPECT_EQ(out[5], inf);
  EXPECT_EQ(out[6], inf);
  for (int k : {7, 8, 11, 12, 13, 14, 15}) EXPECT_LE(ulps(out[k], std::exp(static_cast<double>(in[k]))), 1.01) << in[k];
  EXPECT_GT(out[8], 0.0f);  // gradual underflow: a denormal
  EXPECT_EQ(out[9], 0.0f);
  EXPECT_EQ(out[10], 0.0f);
}

}  // namespace
}  // namespace bakallm
