// Google Benchmark: the pieces whose speed the engine's targets rest on.
//   build/bench/bakallm_bench --benchmark_filter=.   (BAKALLM_THREADS sets libtorch threads, default 2)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <unordered_map>

#include "infer/decoder.h"
#include "infer/sampler.h"
#include "model/baka_lm.h"
#include "ops/attention_weights.h"
#include "ops/cpu.h"
#include "ops/cross_entropy.h"
#include "ops/decode_pool.h"
#include "ops/ema.h"
#include "ops/fast_tensor.h"
#include "ops/gate.h"
#include "model/flops.h"
#include "ops/matmul.h"
#include "ops/negated_norm.h"
#include "ops/rotary.h"
#include "ops/onednn.h"
#include "ops/q8.h"
#include "ops/row_attention.h"
#include "ops/row_norm.h"
#include "ops/row_product.h"
#include "ops/simd.h"
#include "model/runtime.h"
#include "util/huge_pages.h"

#ifdef BAKALLM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace bakallm {
namespace {

int threads() {
  const char* env = std::getenv("BAKALLM_THREADS");
  return env ? std::atoi(env) : 2;
}

// The matmul peak everything else is measured against: [N, N] x [N, N]ᵀ,
// through the engine's product (oneDNN) or libtorch's default torch::matmul.
void BM_Matmul(benchmark::State& state) {
  set_threads(threads());
  const int64_t n = state.range(0);
  const auto dtype = state.range(1) ? torch::kBFloat16 : torch::kFloat;
  const bool engine = state.range(2);
  torch::NoGradGuard no_grad;
  auto a = torch::randn({n, n}), b = torch::randn({n, n});
  auto a16 = a.to(dtype), b16 = b.to(dtype);
  for (auto _ : state)
    benchmark::DoNotOptimize(engine ? matmul_nt(a, b, dtype) : torch::matmul(a16, b16.t()));
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(state.range(1) ? "bfloat16" : "float32") + (engine ? " matmul_nt" : " torch::matmul"));
}
BENCHMARK(BM_Matmul)->Args({1024, 0, 1})->Args({1024, 1, 1})->Args({1024, 0, 0})->Unit(benchmark::kMillisecond);

#ifdef BAKALLM_HAVE_DNNL
// The choice in ops/onednn.cpp: one primitive per layout whose sizes come at
// run time (oneDNN 2.6 then runs its jit gemm; its brgemm, AMX's kernel for
// matmul, takes fixed shapes only) against a primitive made for the shape,
// bfloat16 operands into float32 or bfloat16, at tiny's 4 x 578 rows: y = x·Wᵀ
// for 320 -> 320, 320 -> 1280, 1280 -> 320 and the head's 320 -> 32,000, and
// 1024³, and the head's backward d(hidden) = dlogits · W for a chunk of 1,024
// rows (K = 32,000: there the jit gemm beat brgemm, onednn::kPerShapeMaxDepth).
// The label names the implementation oneDNN picked. On a CPU with AMX
// this says whether per-shape primitives would pay there.
void BM_OneDnnPrimitive(benchmark::State& state) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  set_threads(threads());
  struct Shape {
    int64_t M, K, N;
    bool b_transposed;  // b a weight [N, K] read as Wᵀ (the model's products), or a plain [K, N]
  };
  const std::array<Shape, 6> shapes{{{2312, 320, 320, true}, {2312, 320, 1280, true}, {2312, 1280, 320, true},
                                     {2312, 320, 32000, true}, {1024, 1024, 1024, false}, {1024, 32000, 320, false}}};
  const auto [M, K, N, b_transposed] = shapes[state.range(0)];
  const bool runtime = state.range(1);
  const auto out = state.range(2) ? dt::bf16 : dt::f32;
  const dnnl::memory::dims a{M, K}, b{K, N}, c{M, N}, any{DNNL_RUNTIME_DIM_VAL, DNNL_RUNTIME_DIM_VAL};
  const auto b_tag = b_transposed ? tag::ba : tag::ab;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const dnnl::matmul::desc desc({runtime ? any : a, dt::bf16, tag::ab}, {runtime ? any : b, dt::bf16, b_tag},
                                {runtime ? any : c, out, tag::ab});
  const dnnl::matmul::primitive_desc pd(desc, engine);
  dnnl::matmul product(pd);
  const auto x = torch::randn({M, K}).to(torch::kBFloat16), w = torch::randn({N, K}).to(torch::kBFloat16);
  const auto wt = b_transposed ? w : w.t().contiguous();  // [K, N] as b_tag reads it
  auto y = torch::empty({M, N}, out == dt::f32 ? torch::kFloat : torch::kBFloat16);
  dnnl::memory am({a, dt::bf16, tag::ab}, engine, x.data_ptr()), bm({b, dt::bf16, b_tag}, engine, wt.data_ptr()),
      cm({c, out, tag::ab}, engine, y.data_ptr());
  auto run = [&] {
    product.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    stream.wait();
  };
  run();  // untimed: the first touch of y (the head's is 296 MB of float32)
  for (auto _ : state) run();
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * M * K * N, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::to_string(K) + " -> " + std::to_string(N) + (runtime ? ", run-time shape" : ", fixed shape") +
                 (out == dt::f32 ? ", float32 out: " : ", bfloat16 out: ") + pd.impl_info_str());
}
BENCHMARK(BM_OneDnnPrimitive)->ArgsProduct({{0, 1, 2, 3, 4, 5}, {1, 0}, {0, 1}})->Unit(benchmark::kMicrosecond);

// Each product class of tiny's training step, in the layouts the model hands
// oneDNN, against the peak bench measures (1,024³, out in the operands'
// dtype, as measure_matmul_flops runs it), timed pair by pair: peak, product,
// peak. A host whose rate moves by seconds (the Xeon with AMX here: 1,024³ at
// 355-750 and at 930-1,610 GFLOP/s, alternating) leaves each pair in one
// phase; pairs whose two peaks differ by over 30% are dropped. Counters: the
// product's median share of the peak over all pairs, over the pairs whose
// peak was in the top quarter (fast) and in the bottom quarter (slow), and
// those quarters' median peaks; the label names oneDNN's kernel. It bounds
// the MFU a step of these products could reach with nothing between them.
// Shapes (G batches of M x K -> N; 2,312 rows = 4 x 578): x·Wᵀ 320 -> 320,
// 320 -> 1,280 and 1,280 -> 320 (W read transposed); dx = dy·W 320 -> 320;
// the head's logits 1,024 x 320 -> 32,000 (Wᵀ) and d(hidden) 1,024 x 32,000
// -> 320; the weight gradients dW = dyᵀ·x 320 x 2,312 -> 320, 1,280 x 2,312
// -> 320, 320 x 2,312 -> 1,280 and the head's 32,000 x 1,024 -> 320 (dy read
// transposed); attention's scores 4 x 578 x 640 -> 1,156 (Kᵀ), dQ = dS·K 4 x
// 578 x 1,156 -> 640 and dK = dSᵀ·Q 4 x 1,156 x 578 -> 640 (dS read
// transposed), dP = dO·Vᵀ 4 x 578 x 320 -> 1,156; base's scores 4 x 578 x
// 1,536 -> 1,156 and dP 4 x 578 x 768 -> 1,156. Second argument: bfloat16
// operands into float32 (0) or bfloat16 (1) on fixed-shape primitives
// (brgemm on AMX), as the model's bfloat16 products run there; float32
// throughout on the run-time-shaped jit gemm (2) or on a fixed-shape
// primitive (3: brgemm where the CPU has AVX-512), against the float32 peak on the jit gemm (as bench measures it).
// The model runs float32 products whose left operand is read transposed as
// (3), the others as (2) (onednn.h, per_shape).
void BM_ProductAgainstPeak(benchmark::State& state) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  set_threads(threads());
  struct Shape {
    int64_t G, M, K, N;
    bool a_transposed;  // a [M, K] read from a [K, M] tensor (dW = dyᵀ · x)
    bool b_transposed;  // b [K, N] read from an [N, K] tensor (x · Wᵀ)
  };
  const std::array<Shape, 16> shapes{{{1, 2312, 320, 320, false, true},
                                      {1, 2312, 320, 1280, false, true},
                                      {1, 2312, 1280, 320, false, true},
                                      {1, 2312, 320, 320, false, false},
                                      {1, 1024, 320, 32000, false, true},
                                      {1, 1024, 32000, 320, false, false},
                                      {1, 320, 2312, 320, true, false},
                                      {1, 1280, 2312, 320, true, false},
                                      {1, 320, 2312, 1280, true, false},
                                      {1, 32000, 1024, 320, true, false},
                                      {4, 578, 640, 1156, false, true},
                                      {4, 578, 1156, 640, false, false},
                                      {4, 1156, 578, 640, true, false},
                                      {4, 578, 320, 1156, false, true},
                                      {4, 578, 1536, 1156, false, true},
                                      {4, 578, 768, 1156, false, true}}};
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  struct Product {
    dnnl::matmul primitive;
    torch::Tensor a, b, c;  // [G·M·K] (or transposed), [G·K·N] (or transposed), [G·M·N]
    std::unordered_map<int, dnnl::memory> args;
    double flops;
    double seconds(dnnl::stream& s) {
      const auto t0 = std::chrono::steady_clock::now();
      primitive.execute(s, args);
      s.wait();
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  };
  const bool float32 = state.range(1) >= 2;
  const dt in = float32 ? dt::f32 : dt::bf16, out = state.range(1) == 1 ? dt::bf16 : dt::f32;
  auto torch_type = [](dt t) { return t == dt::f32 ? torch::kFloat : torch::kBFloat16; };
  auto make = [&](const Shape& s, dt out, bool run_time) {
    const auto a_tag = s.a_transposed ? tag::acb : tag::abc, b_tag = s.b_transposed ? tag::acb : tag::abc;
    const dnnl::memory::desc a({s.G, s.M, s.K}, in, a_tag), b({s.G, s.K, s.N}, in, b_tag), c({s.G, s.M, s.N}, out, tag::abc);
    const dnnl::memory::dims any(3, DNNL_RUNTIME_DIM_VAL);
    const auto desc = run_time ? dnnl::matmul::desc({any, in, a_tag}, {any, in, b_tag}, {any, out, tag::abc})
                               : dnnl::matmul::desc(a, b, c);
    Product p{dnnl::matmul(dnnl::matmul::primitive_desc(desc, engine)), torch::randn({s.G * s.M * s.K}).to(torch_type(in)),
              torch::randn({s.G * s.K * s.N}).to(torch_type(in)), torch::empty({s.G * s.M * s.N}, torch_type(out)), {},
              2.0 * s.G * s.M * s.K * s.N};
    p.args = {{DNNL_ARG_SRC, dnnl::memory(a, engine, p.a.data_ptr())},
              {DNNL_ARG_WEIGHTS, dnnl::memory(b, engine, p.b.data_ptr())},
              {DNNL_ARG_DST, dnnl::memory(c, engine, p.c.data_ptr())}};
    return p;
  };
  Product product = make(shapes[state.range(0)], out, state.range(1) == 2);
  // measure_matmul_flops: a · bᵀ, out in the operands' dtype; float32 on the run-time jit gemm
  Product peak = make({1, 1024, 1024, 1024, false, true}, in, float32);
  const char* impl = nullptr;
  dnnl_primitive_desc_query(product.primitive.get_primitive_desc(), dnnl_query_impl_info_str, 0, &impl);
  state.SetLabel(impl ? impl : "");
  product.seconds(stream), peak.seconds(stream);  // untimed: first touch
  std::vector<std::pair<double, double>> pairs;    // (peak FLOP/s, the product's share of it)
  for (auto _ : state) {
    const double before = peak.flops / peak.seconds(stream), rate = product.flops / product.seconds(stream),
                 after = peak.flops / peak.seconds(stream);
    if (std::max(before, after) <= 1.3 * std::min(before, after)) pairs.emplace_back((before + after) / 2, rate / ((before + after) / 2));
  }
  if (pairs.empty()) return state.SkipWithError("every pair straddled a change of the machine's speed");
  auto median = [](std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  std::sort(pairs.begin(), pairs.end());
  const size_t quarter = std::max<size_t>(1, pairs.size() / 4);
  auto counters = [&](size_t first, size_t last, const std::string& name) {
    std::vector<double> peaks, shares;
    for (size_t i = first; i < last; ++i) peaks.push_back(pairs[i].first), shares.push_back(pairs[i].second);
    state.counters["share" + name] = median(shares);
    if (!name.empty()) state.counters["peak_GFLOPs" + name] = median(peaks) / 1e9;
  };
  counters(0, pairs.size(), "");
  counters(pairs.size() - quarter, pairs.size(), "_fast");
  counters(0, quarter, "_slow");
  state.counters["pairs"] = static_cast<double>(pairs.size());
}
BENCHMARK(BM_ProductAgainstPeak)->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {0, 1, 2, 3}})->Iterations(400)->Unit(benchmark::kMillisecond);
#endif

// The three products of a Linear in a training step, at a window's rows
// (W + 2M + 2 = 578) and base's shapes: y = x·Wᵀ, dx = dy·W, dW = dyᵀ·x, in
// float32 or bfloat16; the bfloat16 operands given in float32, as the model
// holds them (the conversion timed too), or already converted (the product alone).
void BM_TrainingProduct(benchmark::State& state) {
  set_threads(threads());
  const int64_t M = 578, K = state.range(0), N = state.range(1), which = state.range(3);
  const auto dtype = state.range(2) ? torch::kBFloat16 : torch::kFloat;
  const bool converted = state.range(4);
  torch::NoGradGuard no_grad;
  auto x = torch::randn({M, K}), w = torch::randn({N, K}), dy = torch::randn({M, N});
  if (converted) x = x.to(dtype), w = w.to(dtype), dy = dy.to(dtype);
  for (auto _ : state) {
    if (which == 0) benchmark::DoNotOptimize(matmul_nt(x, w, dtype));
    if (which == 1) benchmark::DoNotOptimize(matmul_nt(dy, w.t(), dtype));
    if (which == 2) benchmark::DoNotOptimize(matmul_nt(dy.t(), x.t(), dtype));
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(state.range(2) ? "bfloat16" : "float32") + (which == 0 ? " y" : which == 1 ? " dx" : " dW") +
                 (converted ? " (operands converted before)" : ""));
}
BENCHMARK(BM_TrainingProduct)
    ->ArgsProduct({{768}, {768, 2048}, {0, 1}, {0, 1, 2}, {0}})
    ->ArgsProduct({{2048}, {768}, {0, 1}, {0, 1, 2}, {0}})
    ->ArgsProduct({{768}, {768, 2048}, {1}, {0, 1, 2}, {1}})
    ->ArgsProduct({{2048}, {768}, {1}, {0, 1, 2}, {1}})
    ->Unit(benchmark::kMicrosecond);

// The gradient of an input that several products read, dx = Σ dy_i · W_i, at
// tiny's shapes (a window of 4 x 578 rows, D = 320; h feeds q and k [320,
// 320] and fc_gate and fc_up [1280, 320]), in bfloat16 products with a
// float32 sum: each product into its own buffer and the sums by add (what
// autograd does), or the later products added in the product itself
// (onednn::matmul_add, matmul's SumGradients).
void BM_SharedInputGradient(benchmark::State& state) {
  set_threads(threads());
  const bool post_op = state.range(0);
  const auto dtype = state.range(1) ? torch::kBFloat16 : torch::kFloat;
  const int64_t M = 4 * 578, D = 320;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> dy, w;
  for (int64_t n : {D, D, 4 * D, 4 * D}) dy.push_back(torch::randn({M, n}).to(dtype)), w.push_back(torch::randn({n, D}).to(dtype));
  for (auto _ : state) {
    auto dx = onednn::matmul(dy[0], w[0], torch::kFloat);
    for (size_t i = 1; i < dy.size(); ++i) {
      if (post_op) onednn::matmul_add(dy[i], w[i], dx);
      else dx = dx + onednn::matmul(dy[i], w[i], torch::kFloat);
    }
    benchmark::DoNotOptimize(dx);
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * M * D * 10 * D, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(state.range(1) ? "bfloat16" : "float32") + (post_op ? ", sum post-op" : ", products then adds"));
}
BENCHMARK(BM_SharedInputGradient)->ArgsProduct({{0, 1}, {1, 0}})->Unit(benchmark::kMicrosecond);

// The rotary rotation of one layer's queries, tiny preset ([B, T, 2D], D = 320):
// one decoded row, or a training batch of 4 x 578 rows; the fused loop against
// the tensor expression it replaced (ops/rotary.h).
void BM_Rotary(benchmark::State& state) {
  set_threads(threads());
  c10::InferenceMode inference;
  const int64_t rows = state.range(0), D = 320;
  const bool fused = state.range(1);
  auto x = torch::randn({rows == 1 ? 1 : 4, rows == 1 ? 1 : rows / 4, 2 * D});
  auto angle = torch::rand({x.size(1), D / 2}) * 100;
  auto c = angle.cos(), s = angle.sin();
  for (auto _ : state) benchmark::DoNotOptimize(fused ? rotate_pairs(x, c, s, D) : rotate_pairs_unfused(x, c, s, D));
  state.SetLabel(std::string(fused ? "fused" : "expression") + (rows == 1 ? ", one row" : ", 4 x 578 rows"));
}
BENCHMARK(BM_Rotary)->Args({1, 1})->Args({1, 0})->Args({4 * 578, 1})->Args({4 * 578, 0})->Unit(benchmark::kMicrosecond);

// One layer's keys shaped, tiny preset (x [B, T, D], D = 320 -> [B, T, 2D]):
// LayerNorm([x ; c − x]) rotated, the fused op (ops/negated_norm.h) against
// the expression; one decoded row, or a training batch of 4 x 578 rows,
// forward and backward.
void BM_NegatedNorm(benchmark::State& state) {
  set_threads(threads());
  const int64_t rows = state.range(0), D = 320;
  const bool fused = state.range(1), train = rows > 1;
  auto leaf = [&](torch::Tensor t) { return t.requires_grad_(train); };
  const auto x = leaf(torch::randn({rows == 1 ? 1 : 4, rows == 1 ? 1 : rows / 4, D})), c = leaf(torch::ones({}));
  const auto g = leaf(torch::ones({2 * D})), b = leaf(torch::zeros({2 * D}));
  const auto angle = torch::rand({x.size(1), D / 2}) * 100;
  const auto cos = angle.cos(), sin = angle.sin(), w = torch::randn({x.size(0), x.size(1), 2 * D});
  for (auto _ : state) {
    const auto y = fused ? negated_norm_rotary(x, c, g, b, 1e-5, cos, sin)
                         : negated_norm_rotary_unfused(x, c, g, b, 1e-5, cos, sin);
    if (train) (y * w).sum().backward();
    benchmark::DoNotOptimize(y);
  }
  state.SetLabel(std::string(fused ? "fused" : "expression") + (train ? ", 4 x 578 rows, forward and backward" : ", one row"));
}
BENCHMARK(BM_NegatedNorm)->Args({1, 1})->Args({1, 0})->Args({4 * 578, 1})->Args({4 * 578, 0})->Unit(benchmark::kMicrosecond);

// Its backward alone, for tiny's 4 x 578 rows of x in float32 or bfloat16 (the
// products' output when they compute in bfloat16): the graph kept, each
// iteration one backward of the fused op.
void BM_NegatedNormBackward(benchmark::State& state) {
  set_threads(threads());
  const int64_t D = 320;
  const auto dtype = state.range(0) ? torch::kBFloat16 : torch::kFloat;
  const auto x = torch::randn({4, 578, D}).to(dtype).requires_grad_(true), c = torch::ones({}).requires_grad_(true);
  const auto g = torch::ones({2 * D}).requires_grad_(true), b = torch::zeros({2 * D}).requires_grad_(true);
  const auto angle = torch::rand({x.size(1), D / 2}) * 100;
  const auto y = negated_norm_rotary(x, c, g, b, 1e-5, angle.cos(), angle.sin());
  const auto dy = torch::randn(y.sizes());
  for (auto _ : state) benchmark::DoNotOptimize(torch::autograd::grad({y}, {x, c, g, b}, {dy}, /*retain_graph=*/true));
  state.SetLabel(state.range(0) ? "x bfloat16, 4 x 578 rows" : "x float32, 4 x 578 rows");
}
BENCHMARK(BM_NegatedNormBackward)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// The MLP's gate relu(g) ⊙ u on tiny's 4 x 578 rows of I = 1280, in float32
// or bfloat16 (fc_up's and fc_gate's output when the products compute in
// bfloat16): the forward alone, or forward and backward.
void BM_ReluGate(benchmark::State& state) {
  set_threads(threads());
  const auto dtype = state.range(0) ? torch::kBFloat16 : torch::kFloat;
  const bool train = state.range(1);
  const auto u = torch::randn({4, 578, 1280}).to(dtype).requires_grad_(train);
  const auto g = torch::randn({4, 578, 1280}).to(dtype).requires_grad_(train);
  const auto dy = torch::randn({4, 578, 1280}).to(dtype);
  for (auto _ : state) {
    const auto y = relu_gate(u, g);
    if (train) benchmark::DoNotOptimize(torch::autograd::grad({y}, {u, g}, {dy}));
    benchmark::DoNotOptimize(y);
  }
  state.SetLabel(std::string(state.range(0) ? "bfloat16" : "float32") + (train ? ", forward and backward" : ", forward"));
}
BENCHMARK(BM_ReluGate)->Args({0, 0})->Args({1, 0})->Args({0, 1})->Args({1, 1})->Unit(benchmark::kMicrosecond);

// The head loss's softmax rows for a chunk of 1024 tokens of a 32,000 vocabulary:
// max, exp in place and sum in one kernel (ops/cross_entropy.h) against the
// tensor ops it replaced (max, sub_, exp_, sum).
void BM_ExpRows(benchmark::State& state) {
  set_threads(threads());
  c10::InferenceMode inference;
  const auto logits = torch::randn({1024, 32000}) * 5;
  auto x = logits.clone();
  for (auto _ : state) {
    x.copy_(logits);
    if (state.range(0)) {
      benchmark::DoNotOptimize(exp_rows_(x));
    } else {
      auto m = std::get<0>(x.max(1, true));
      benchmark::DoNotOptimize(x.sub_(m).exp_().sum(1, true));
    }
  }
  state.SetLabel(state.range(0) ? "kernel (copy included)" : "tensor ops (copy included)");
}
BENCHMARK(BM_ExpRows)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond);

// The head loss's gradient rows for the same chunk in training (bfloat16
// products): max, exponentials, sum and the bfloat16 gradient in one kernel
// (ops/cross_entropy.h) against the tensor ops (max, sub_, exp_, sum, mul_,
// scatter_add_, a cast).
void BM_SoftmaxGradient(benchmark::State& state) {
  set_threads(threads());
  c10::InferenceMode inference;
  const auto logits = torch::randn({1024, 32000}) * 5;
  const auto w = torch::full({1024, 1}, 1.0 / 1024), index = torch::randint(32000, {1024, 1}, torch::kLong);
  auto x = logits.clone();
  for (auto _ : state) {
    x.copy_(logits);
    if (state.range(0)) {
      benchmark::DoNotOptimize(softmax_gradient_(x, w, index, torch::kBFloat16));
    } else {
      auto m = std::get<0>(x.max(1, true));
      auto sum = x.sub_(m).exp_().sum(1, true);
      x.mul_(w / sum).scatter_add_(1, index, -w);
      benchmark::DoNotOptimize(x.to(torch::kBFloat16));
    }
  }
  state.SetLabel(state.range(0) ? "kernel (copy included)" : "tensor ops (copy included)");
}
BENCHMARK(BM_SoftmaxGradient)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond);

// One decoded token of the tiny preset after a window of context, float32 or
// bfloat16 weights: the figure the decode target is about.
void BM_DecodeToken(benchmark::State& state) {
  set_threads(threads());
  auto config = preset("tiny");
  auto model = make_model(config, 0);
  model->eval();
  const char* formats[] = {"float32", "bfloat16", "int8"};
  use_weights(model, formats[state.range(0)]);
  Decoder dec(model, 1);
  dec.feed(torch::randint(0, config.vocab_size, {1, config.window_size}, torch::kLong));
  auto next = torch::randint(0, config.vocab_size, {1, 1}, torch::kLong);
  for (auto _ : state) benchmark::DoNotOptimize(dec.feed(next));
  state.SetLabel(std::string(formats[state.range(0)]) + " weights");
}
BENCHMARK(BM_DecodeToken)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->Iterations(100);

// The tensor calls of a decoded token, under c10::InferenceMode as the
// decoder runs: 0 at::empty and 1 empty_rows for a kernel's output [1, 1,
// 320]; 2 narrow and 3 narrow_rows for a view of a row buffer [1, 600, 640].
void BM_TensorCalls(benchmark::State& state) {
  c10::InferenceMode inference;
  const auto buffer = torch::randn({1, 600, 640});
  const std::vector<int64_t> sizes{1, 1, 320};
  for (auto _ : state) {
    switch (state.range(0)) {
      case 0: benchmark::DoNotOptimize(at::empty(sizes, torch::kFloat)); break;
      case 1: benchmark::DoNotOptimize(empty_rows(sizes, torch::kFloat, torch::kCPU)); break;
      case 2: benchmark::DoNotOptimize(buffer.narrow(1, 0, 300)); break;
      default: benchmark::DoNotOptimize(narrow_rows(buffer, 1, 0, 300)); break;
    }
  }
  const char* calls[] = {"at::empty", "empty_rows", "narrow", "narrow_rows"};
  state.SetLabel(calls[state.range(0)]);
}
BENCHMARK(BM_TensorCalls)->DenseRange(0, 3)->Unit(benchmark::kNanosecond);

// One draw from 32000 logits (the sampler after every generated token), flat
// (an untrained model's) or peaked (scale 8), for each filter: 0 none, 1
// top-k 40, 2 top-p 0.9, 3 min-p 0.05. Filters had sorted all 32000 tokens.
void BM_Sample(benchmark::State& state) {
  torch::manual_seed(1);
  const auto logits = torch::randn({32000}) * (state.range(1) ? 8.0 : 0.1);
  SamplingOptions o;
  if (state.range(0) == 1) o.top_k = 40;
  if (state.range(0) == 2) o.top_p = 0.9;
  if (state.range(0) == 3) o.min_p = 0.05;
  Sampler sampler(o);
  for (auto _ : state) benchmark::DoNotOptimize(sampler.sample(logits));
  const char* filters[] = {"no filter", "top-k 40", "top-p 0.9", "min-p 0.05"};
  state.SetLabel(std::string(filters[state.range(0)]) + (state.range(1) ? ", peaked" : ", flat"));
}
BENCHMARK(BM_Sample)->ArgsProduct({{0, 1, 2, 3}, {0, 1}})->Unit(benchmark::kMicrosecond);

// One token's product with a tiny weight [N, 320] (N = 32000: the head; N =
// 320: a layer's square product), or 4 or 16 tokens' (the server's streams):
// float32, bfloat16 and Q8_0 through matmul_nt / matmul_nt_q8 (the row
// kernel, ops/row_product.h, for few rows), and float32 / bfloat16 through
// oneDNN alone, what the row kernel replaced; weight bytes read per second.
// Kind 4, oneDNN's bfloat16 product, exists only where oneDNN has one (not on AVX2).
bool skip_without_onednn_bfloat16(benchmark::State& state) {
  if (onednn::supports(torch::kBFloat16)) return false;
  state.SkipWithError("no bfloat16 matmul in oneDNN here");
  return true;
}

void BM_HeadProduct(benchmark::State& state) {
  set_threads(threads());
  const int64_t kind = state.range(0), N = state.range(2);
  const auto w = torch::randn({N, 320}) * 0.05;
  const auto x = torch::randn({state.range(1), 320});
  const auto q = quantize_q8(w);
  const auto w16 = w.to(torch::kBFloat16);
  const int64_t bytes = kind == 2 ? q.bytes() : kind == 1 || kind == 4 ? w.numel() * 2 : w.numel() * 4;
  if (kind == 4 && skip_without_onednn_bfloat16(state)) return;
  for (auto _ : state) {
    switch (kind) {
      case 0: benchmark::DoNotOptimize(matmul_nt(x, w)); break;
      case 1: benchmark::DoNotOptimize(matmul_nt(x, w16, torch::kBFloat16)); break;
      case 2: benchmark::DoNotOptimize(matmul_nt_q8(x, q)); break;
      case 3: benchmark::DoNotOptimize(onednn::matmul(x, w.t(), torch::kFloat)); break;
      default: benchmark::DoNotOptimize(onednn::matmul(x.to(torch::kBFloat16), w16.t(), torch::kFloat)); break;
    }
  }
  state.SetBytesProcessed(state.iterations() * bytes);
  const char* kinds[] = {"float32", "bfloat16", "int8", "float32 oneDNN", "bfloat16 oneDNN"};
  state.SetLabel(std::string(kinds[kind]) + (kind < 3 ? std::string(" (") + isa_name(kernel_isa()) + ")" : "") + ", " +
                 std::to_string(state.range(1)) + " row(s)");
}
BENCHMARK(BM_HeadProduct)
    ->ArgsProduct({{0, 1, 2, 3, 4}, {1, 4, 16}, {32000, 320}})
    ->Unit(benchmark::kMicrosecond);

// A one-row product with the weight read from memory, not the cache: weights
// used in turn, 490 MB of float32 in all, in 2 MB pages. Set against `bakallm bench`'s read
// bandwidth, this says whether decoding's products run at the floor. Shapes
// [N, K]: tiny's head [32000, 320], base's MLP [2048, 768] and [768, 2048],
// and tiny's layer products [320, 320] and [1280, 320] (each call's fixed
// cost shows against its few microseconds).
void BM_HeadProductFromMemory(benchmark::State& state) {
  set_threads(threads());
  const int64_t kind = state.range(0), N = state.range(1), K = state.range(2);
  const int64_t count = (int64_t{490} << 20) / (N * K * 4);
  std::vector<torch::Tensor> ws;
  std::vector<Q8Weight> qs;
  for (int64_t i = 0; i < count; ++i) {
    const auto w = torch::randn({N, K}) * 0.05;
    ws.push_back(kind == 1 || kind == 4 ? w.to(torch::kBFloat16) : w);
    if (kind == 2) qs.push_back(quantize_q8(w));
  }
  std::vector<torch::Tensor*> stored;  // in 2 MB pages, as a loaded model's (model/baka_lm.cpp)
  for (auto& w : ws) stored.push_back(&w);
  for (auto& q : qs) stored.insert(stored.end(), {&q.q, &q.scales});
  move_to_huge_pages(stored);
  const auto x = torch::randn({1, K});
  const int64_t bytes = kind == 2 ? qs[0].bytes() : ws[0].numel() * ws[0].element_size();
  size_t i = 0;
  if (kind == 4 && skip_without_onednn_bfloat16(state)) return;
  for (auto _ : state) {
    const auto& w = ws[i % ws.size()];
    switch (kind) {
      case 0: benchmark::DoNotOptimize(matmul_nt(x, w)); break;
      case 1: benchmark::DoNotOptimize(matmul_nt(x, w, torch::kBFloat16)); break;
      case 2: benchmark::DoNotOptimize(matmul_nt_q8(x, qs[i % qs.size()])); break;
      case 3: benchmark::DoNotOptimize(onednn::matmul(x, w.t(), torch::kFloat)); break;
      default: benchmark::DoNotOptimize(onednn::matmul(x.to(torch::kBFloat16), w.t(), torch::kFloat)); break;
    }
    ++i;
  }
  state.SetBytesProcessed(state.iterations() * bytes);
  const char* kinds[] = {"float32", "bfloat16", "int8", "float32 oneDNN", "bfloat16 oneDNN"};
  state.SetLabel(kinds[kind]);
}
BENCHMARK(BM_HeadProductFromMemory)
    ->ArgsProduct({{0, 1, 2, 3, 4}, {32000}, {320}})
    ->ArgsProduct({{0, 1, 3, 4}, {2048}, {768}})
    ->ArgsProduct({{0, 1, 3, 4}, {768}, {2048}})
    ->ArgsProduct({{0, 1, 2}, {320, 1280}, {320}})
    ->Unit(benchmark::kMicrosecond);

// One thread's row product (ops/row_product.h) of M rows with a weight
// [N, K] already in its caches (L2 for [320, 320] float32: 400 kB), as the
// decode pool's worker finds its half of a product it streamed ahead: how
// fast the kernel computes, apart from memory; weight bytes per second.
// First argument: 0 float32, 1 bfloat16, 2 int8 (Q8_0).
void BM_RowProductFromCache(benchmark::State& state) {
  set_threads(1);
  const int64_t kind = state.range(0), M = state.range(1), N = state.range(2), K = state.range(3);
  const auto w = torch::randn({N, K}) * 0.05;
  const auto wb = w.to(torch::kBFloat16);
  const auto q = quantize_q8(w);
  const auto a = torch::randn({M, K});
  auto y = torch::empty({M, N});
  const void* weights[] = {w.data_ptr(), wb.data_ptr(), q.q.data_ptr()};
  const RowWeights kinds[] = {RowWeights::kFloat, RowWeights::kBFloat16, RowWeights::kQ8};
  for (auto _ : state) {
    row_product(a.data_ptr<float>(), M, K, weights[kind], kind == 2 ? q.scales.data_ptr<float>() : nullptr, kinds[kind],
                y.data_ptr<float>(), N);
    benchmark::ClobberMemory();
  }
  set_threads(threads());
  const int64_t bytes = kind == 2 ? q.bytes() : N * K * (kind == 1 ? 2 : 4);
  state.SetBytesProcessed(state.iterations() * bytes);
  const char* names[] = {"float32", "bfloat16", "int8"};
  state.SetLabel(names[kind]);
}
BENCHMARK(BM_RowProductFromCache)
    ->ArgsProduct({{0, 1, 2}, {1, 2}, {320}, {320}})
    ->ArgsProduct({{0, 1, 2}, {1}, {320}, {1280}})
    ->Unit(benchmark::kMicrosecond);

// A 256 kB stretch of a 1 GB buffer (so from memory) read after being asked
// for ahead, as the decode pool's worker asks for its next weight while the
// caller does a layer's serial work: 0 not asked for, 1 prefetched line after
// line back to back, 2 by stream_ahead (paced). Timed: the read, 100 us after
// the asking; counter ask_us: the asking.
void BM_StreamAhead(benchmark::State& state) {
  const int64_t stretch = int64_t{256} << 10, count = (int64_t{1} << 30) / stretch;
  std::vector<int64_t> buffer(count * stretch / 8, 1);
  const int mode = static_cast<int>(state.range(0));
  int64_t sum = 0, i = 0;
  double asking = 0;
  using Clock = std::chrono::steady_clock;
  for (auto _ : state) {
    const char* first = reinterpret_cast<const char*>(buffer.data()) + (i++ * 7919 % count) * stretch;
    const auto t0 = Clock::now();
    if (mode == 1)
      for (int64_t line = 0; line < stretch; line += 64) prefetch_line(first + line);
    if (mode == 2) stream_ahead(first, stretch, [] { return true; });
    const auto t1 = Clock::now();
    while (Clock::now() - t1 < std::chrono::microseconds(100)) {
    }
    const auto t2 = Clock::now();
    const auto* p = reinterpret_cast<const int64_t*>(first);
    for (int64_t j = 0; j < stretch / 8; ++j) sum += p[j];
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - t2).count());
    asking += std::chrono::duration<double, std::micro>(t1 - t0).count();
  }
  benchmark::DoNotOptimize(sum);
  state.SetBytesProcessed(state.iterations() * stretch);
  state.counters["ask_us"] = asking / static_cast<double>(state.iterations());
  const char* modes[] = {"not asked for", "prefetched back to back", "stream_ahead (paced)"};
  state.SetLabel(modes[mode]);
}
BENCHMARK(BM_StreamAhead)->DenseRange(0, 2)->UseManualTime()->Unit(benchmark::kMicrosecond);

// One decoded row's attention in each of the tiny preset's 8 layers, after
// ~600 keys (a window and a half): the row kernel (ops/row_attention.h)
// against the dense products it replaced, on keys and values of 8 distinct
// layers (18 MB, as a token reads them; 9 MB in bfloat16, the decoder's cache
// beside bfloat16 or int8 weights); key and value bytes read per second.
// Second argument 1: base's shapes (12 layers of F = 1536 after 1,100 keys).
// Third argument 1: the row kernel on enough layers' keys (1 GB) that each
// comes from memory, not from a cache.
void BM_RowAttention(benchmark::State& state) {
  set_threads(threads());
  const bool base = state.range(1), from_memory = state.range(2);
  const int64_t Tk = base ? 1100 : 600, F = base ? 1536 : 640, Dv = F / 2;
  const auto kv = state.range(0) == 2 ? torch::kBFloat16 : torch::kFloat;
  // From memory: as many layers as fill 1 GB, more than the caches hold, as a
  // decoded token finds its keys after streaming the weights.
  const int64_t layer_bytes = Tk * (F + Dv) * torch::elementSize(kv);
  const int64_t layers = from_memory ? (int64_t{1} << 30) / layer_bytes + 1 : base ? 12 : 8;
  std::vector<torch::Tensor> Ks, Vs;
  for (int64_t l = 0; l < layers; ++l) {
    Ks.push_back(torch::randn({1, Tk, F}).to(kv));
    Vs.push_back(torch::randn({1, Tk, Dv}).to(kv));
  }
  const auto q = torch::randn({1, 1, F});
  const double scale = 1.0 / std::sqrt(static_cast<double>(F));
  const AttentionMask mask{true, Tk - 1, 0, {}};
  for (auto _ : state) {
    for (int64_t l = 0; l < layers; ++l) {
      if (state.range(0)) {
        benchmark::DoNotOptimize(row_attention(q, Ks[l], Vs[l], mask, scale));
      } else {
        const auto w = torch::softmax(matmul_nt(q, Ks[l]) * scale, -1);
        benchmark::DoNotOptimize(matmul_nt(w, Vs[l].transpose(-2, -1)));
      }
    }
  }
  state.SetBytesProcessed(state.iterations() * layers * Tk * (F + Dv) * Ks[0].element_size());
  const char* labels[] = {"dense products", "row kernel", "row kernel, bfloat16 keys"};
  state.SetLabel(std::string(labels[state.range(0)]) + (base ? ", base's shapes, " : ", tiny's shapes, ") +
                 std::to_string(layers) + " layers" + (from_memory ? " (from memory)" : ""));
}
BENCHMARK(BM_RowAttention)->ArgsProduct({{2, 1, 0}, {0, 1}, {0}})->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RowAttention)->ArgsProduct({{2, 1}, {0, 1}, {1}})->Unit(benchmark::kMicrosecond);

// EMA scan over one tiny-preset layer's input: [8, 2·578, 320], forward and backward.
void BM_EmaScan(benchmark::State& state) {
  set_threads(threads());
  auto u = torch::randn({8, 1156, 320}).requires_grad_();
  auto alpha = torch::rand({320}).requires_grad_();
  auto q = (0.5 * torch::rand({320})).requires_grad_();
  for (auto _ : state) {
    auto y = ema_scan(u, alpha, q);
    if (state.range(0)) y.sum().backward();
    benchmark::DoNotOptimize(y);
  }
  state.SetItemsProcessed(state.iterations() * u.numel());
  state.SetLabel(state.range(0) ? "forward+backward" : "forward");
}
BENCHMARK(BM_EmaScan)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// The elementwise ops between a decoded token's products, one row of the
// tiny preset (D = 320) as the decoder runs them (c10::InferenceMode, float32
// operands): 0 layer_norm_rows, 1 sigmoid_gate with a base, 2 relu_gate
// (I = 1280), 3 negated_norm_rotary, 4 one step of ema_scan from a state.
// Each runs 8-25 times a token (tiny: 8 layers). Here their code and data
// stay in the caches; in a token each follows a product that streamed
// megabytes of weights through them (AMD EPYC: 1.5-3x these times).
void BM_RowOps(benchmark::State& state) {
  set_threads(threads());
  c10::InferenceMode inference;
  const int64_t D = 320, I = 1280;
  const auto x = torch::randn({1, 1, D}), z = torch::randn({1, 1, D}), base = torch::randn({1, 1, D});
  const auto u = torch::randn({1, 1, I}), g = torch::randn({1, 1, I});
  const auto w = torch::rand({D}) + 0.5, b = torch::randn({D});
  const auto c = torch::ones({}), g2 = torch::rand({2 * D}) + 0.5, b2 = torch::randn({2 * D});
  const auto angle = torch::rand({1, D / 2}) * 100;
  const auto cos = angle.cos(), sin = angle.sin();
  const auto alpha = torch::rand({D}), q = 0.5 * torch::rand({D}), y0 = torch::randn({1, D});
  const char* names[] = {"layer_norm_rows", "sigmoid_gate", "relu_gate", "negated_norm_rotary", "ema_scan"};
  for (auto _ : state) {
    switch (state.range(0)) {
      case 0: benchmark::DoNotOptimize(layer_norm_rows(x, w, b, 1e-5)); break;
      case 1: benchmark::DoNotOptimize(sigmoid_gate(x, z, base)); break;
      case 2: benchmark::DoNotOptimize(relu_gate(u, g)); break;
      case 3: benchmark::DoNotOptimize(negated_norm_rotary(x, c, g2, b2, 1e-5, cos, sin)); break;
      default: benchmark::DoNotOptimize(ema_scan(x, alpha, q, y0)); break;
    }
  }
  state.SetLabel(names[state.range(0)]);
}
BENCHMARK(BM_RowOps)->DenseRange(0, 4)->Unit(benchmark::kNanosecond);

// The tiny preset on batch 4 × 2 windows (1024 tokens per row): forward (eval) or a
// training step (forward + backward), in tokens/s; MFU-ready FLOP/s counter.
void BM_TinyModel(benchmark::State& state) {
  set_threads(threads());
  const bool train = state.range(0);
  const bool bf16 = state.range(1);
  auto config = preset("tiny");
  auto model = make_model(config, 0);
  const int64_t B = 4, T = 2 * config.window_size;
  auto ids = torch::randint(0, config.vocab_size, {B, T}, torch::kLong);
  train ? model->train() : model->eval();
  if (bf16) model->set_compute_dtype(torch::kBFloat16);
  const auto flops = flops_per_token(config);
  for (auto _ : state) {
    if (train) {
      model->zero_grad();
      model->forward_loss(ids, shifted_targets(ids)).loss.backward();
    } else {
      torch::NoGradGuard no_grad;
      benchmark::DoNotOptimize(model(ids).logits);
    }
  }
  state.SetItemsProcessed(state.iterations() * B * T);
  state.counters["FLOP/s"] = benchmark::Counter(
      (train ? flops.training_per_token : flops.forward_per_token) * B * T, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(train ? "train step" : "forward") + (bf16 ? " bfloat16" : " float32"));
}
BENCHMARK(BM_TinyModel)->Args({0, 0})->Args({1, 0})->Args({0, 1})->Args({1, 1})->Unit(benchmark::kMillisecond)->Iterations(3);

// The attention's weights over tiny's window (4 x 578 queries, 1,156 keys),
// forward and backward, as the bfloat16 step runs them: float32 scores and
// weights, with the casts to bfloat16 of the weights and the scores'
// gradient that the products then took (0, before session 32), or bfloat16
// in and out with no cast (1).
void BM_AttentionWeightsDtype(benchmark::State& state) {
  set_threads(threads());
  const auto dtype = state.range(0) ? torch::kBFloat16 : torch::kFloat;
  const auto s0 = torch::randn({4, 578, 1156}).to(dtype), up = torch::randn({4, 578, 1156}).to(dtype);
  AttentionWeightsOptions o;
  o.scale = 0.04;
  o.batch = 4;
  o.training = true;
  const AttentionMask m{true, 578, 0, {}};
  for (auto _ : state) {
    auto s = s0.clone().requires_grad_(true);
    const auto t0 = std::chrono::steady_clock::now();
    auto w = attention_weights(s, m, o);
    auto operand = w.to(torch::kBFloat16);  // the weights' product's operand: a cast where W is float32
    w.backward(up);                         // the product's dP, in W's dtype
    auto dy = s.grad().to(torch::kBFloat16);  // the scores' product's dy: a cast where dS is float32
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    benchmark::DoNotOptimize(operand);
    benchmark::DoNotOptimize(dy);
  }
}
BENCHMARK(BM_AttentionWeightsDtype)->Arg(0)->Arg(1)->Arg(0)->Arg(1)->UseManualTime()->Iterations(50)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace bakallm

BENCHMARK_MAIN();
