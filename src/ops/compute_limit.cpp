#include "ops/compute_limit.h"

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "ops/cpu.h"
#include "ops/simd.h"
#include "util/clock.h"

// GCC 12 warns inside its own AVX-512 headers (their "undefined" pass-through operands).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// fma_chains passes vectors by value before it is inlined into its target's function.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace bakallm {

namespace {

constexpr int kChains = 12;  // independent FMA chains: more than 2 ports x 4 cycles' latency

// kChains accumulators of I's float vectors (ops/simd.h), each ITERATIONS
// times 1 · 1 added; inlined into a function with I's target.
template <class I>
__attribute__((always_inline)) inline double fma_chains(int64_t iterations) {
  auto one = I::set1(1.0f);
  asm volatile("" : "+x"(one));  // opaque: the compiler may not fold a · 1 + c into an add
  typename I::F acc[kChains];
  for (auto& a : acc) a = I::zero();
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (auto& a : acc) a = I::fmadd(one, one, a);
  }
  auto most = acc[0];
  for (int c = 1; c < kChains; ++c) most = I::max(most, acc[c]);  // all equal: keeps every chain live
  return I::most(most);
}

BAKALLM_AVX512 double fma_avx512(int64_t iterations) { return fma_chains<Avx512>(iterations); }
BAKALLM_AVX2 double fma_avx2(int64_t iterations) { return fma_chains<Avx2>(iterations); }

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// 4 C tiles (0-3) += A (4, 5) · B (6, 7), all tiles 16 rows of 64 bytes, A and B bfloat16 ones.
__attribute__((target("amx-tile,amx-bf16"))) double tiles(int64_t iterations) {
  TileConfig config;
  for (int t = 0; t < 8; ++t) config.colsb[t] = 64, config.rows[t] = 16;
  _tile_loadconfig(&config);
  alignas(64) static const struct Ones {
    uint16_t v[16 * 32];
    Ones() { std::fill(v, v + 16 * 32, uint16_t{0x3f80}); }  // bfloat16 1.0
  } ones;
  _tile_loadd(4, ones.v, 64);
  _tile_loadd(5, ones.v, 64);
  _tile_loadd(6, ones.v, 64);
  _tile_loadd(7, ones.v, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t i = 0; i < iterations; ++i) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float c[16 * 16];
  _tile_stored(3, c, 64);  // the last tile written: the loop's last product reached it
  _tile_release();
  return c[0];
}

}  // namespace

bool amx_tiles_available() {
  // Linux keeps AMX's 8 kB of tile state off until a process asks (5.16 on).
  static const bool yes = cpu_has_amx_bf16() && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                                                        18 /* XFEATURE_XTILEDATA */) == 0;
  return yes;
}

ComputeLoop fma_loop(int64_t iterations) {
  ComputeLoop loop;
  const auto isa = cpu_isa();
  if (isa == Isa::kPortable) return loop;
  const auto start = Clock::now();
  loop.value = isa == Isa::kAvx512 ? fma_avx512(iterations) : fma_avx2(iterations);
  loop.seconds = seconds_since(start);
  loop.iterations = iterations;
  loop.flops_per_iteration = 2.0 * kChains * (isa == Isa::kAvx512 ? 16 : 8);
  return loop;
}

ComputeLoop tile_loop(int64_t iterations) {
  ComputeLoop loop;
  if (!amx_tiles_available()) return loop;
  const auto start = Clock::now();
  loop.value = tiles(iterations);
  loop.seconds = seconds_since(start);
  loop.iterations = iterations;
  loop.flops_per_iteration = 4 * 2.0 * 16 * 16 * 32;
  return loop;
}

double compute_flops_per_s(ComputeLoop (*loop)(int64_t), int threads, double seconds) {
  const auto probe = loop(1000);
  if (probe.iterations == 0) return 0;
  // iterations for about SECONDS, from a second probe long enough to time (~1 ms)
  const auto longer = loop(std::max<int64_t>(1000, static_cast<int64_t>(1000 * 1e-3 / std::max(probe.seconds, 1e-9))));
  const auto iterations =
      std::max<int64_t>(1000, static_cast<int64_t>(longer.iterations * seconds / std::max(longer.seconds, 1e-9)));
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    std::atomic<int> ran{0};
    const auto start = Clock::now();
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) ran += loop(iterations).iterations > 0;
    });
    const double wall = seconds_since(start);
    best = std::max(best, ran * iterations * probe.flops_per_iteration / wall);
  }
  return best;
}

}  // namespace bakallm
