// The machine's arithmetic limit, apart from memory: multiply-adds on
// registers alone, each thread its own loop, no loads or stores. Float32 by
// AVX-512 (or AVX2) FMA, bfloat16 by AMX's tile product where the CPU has
// AMX. bench reports them beside the products' measured peak (oneDNN's
// 1,024³, which MFU divides by). On the 2-core Xeon with AMX (BENCHMARKS.md,
// session 31) the float32 limit held at 230-282 GFLOP/s, the matmul peak at
// 71-85% of it; the tile unit's own rate moved between 1.6 and 4.0 TFLOP/s
// (16 to 41 cycles a tile product) from one run to the next, and oneDNN's
// bfloat16 peak at 26-44% of it: on that host the tile unit itself slows
// down, not only memory.
#pragma once
#include <cstdint>

namespace bakallm {

// One register-only loop's count: ITERATIONS rounds of FLOPS_PER_ITERATION,
// and what its accumulators summed to (each accumulator lane or tile
// element: ITERATIONS times the same product), so a test can tell the loop
// did the work it counts.
struct ComputeLoop {
  int64_t iterations = 0;
  double flops_per_iteration = 0;
  double seconds = 0;
  double value = 0;  // one accumulator element after the loop
};

// Float32 FMA: 12 independent 16-lane (AVX-512) or 8-lane (AVX2) vectors,
// each a·b + c with a = b = 1 and c from 0: value = ITERATIONS. Portable C++
// CPUs: iterations 0.
ComputeLoop fma_loop(int64_t iterations);

// AMX: 4 C tiles += A·B over 16 x 16 x 32 bfloat16 tiles of ones: value =
// 32 · ITERATIONS. Without AMX: iterations 0.
ComputeLoop tile_loop(int64_t iterations);

// Whether this CPU has AMX's bfloat16 tiles and Linux lets this process use
// them (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA, asked once).
bool amx_tiles_available();

// FLOP/s of LOOP (fma_loop or tile_loop) on THREADS threads at once, each
// run for about SECONDS; the best of 3 rounds. 0 where the loop does not run here.
double compute_flops_per_s(ComputeLoop (*loop)(int64_t), int threads, double seconds = 0.05);

}  // namespace bakallm
