#include "ops/onednn.h"

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <unordered_map>

#include "ops/trace.h"
#include "util/clock.h"

#ifdef BAKALLM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace bakallm::onednn {

bool per_shape(int64_t G, int64_t M, int64_t K, int64_t N, torch::ScalarType dtype, bool amx, bool a_transposed) {
  // brgemm's kernels pay where they beat the jit gemm: bfloat16 on AMX, float32 with A read transposed
  const bool brgemm_faster = dtype == torch::kBFloat16 ? amx : dtype == torch::kFloat && a_transposed;
  if (!brgemm_faster) return false;
  return M >= kPerShapeMinRows && K <= kPerShapeMaxDepth && 2.0 * G * M * K * N >= kPerShapeMinFlops;
}

#ifdef BAKALLM_HAVE_DNNL

namespace {

using torch::Tensor;

// An operand as oneDNN sees it: [G, R, C] with strides, each slice row- or
// column-major.
struct Operand {
  Tensor tensor;  // keeps the buffer alive (a contiguous copy when the view was not plain)
  dnnl::memory::dims dims, strides;
  bool row_major;

  // Each slice stored without gaps between its rows (or columns): what a
  // run-time-shaped primitive (fixed format tag, sizes given at execution)
  // reads.
  bool slice_dense() const { return row_major ? strides[1] == dims[2] : strides[2] == dims[1]; }
  // ... and the slices back to back.
  bool dense() const { return slice_dense() && (dims[0] == 1 || strides[0] == dims[1] * dims[2]); }
  dnnl::memory::format_tag tag() const {
    return row_major ? dnnl::memory::format_tag::abc : dnnl::memory::format_tag::acb;
  }
};

bool is_plain(int64_t rows, int64_t cols, int64_t s_row, int64_t s_col) {
  const bool row_major = (cols == 1 || s_col == 1) && (rows == 1 || s_row >= cols);
  const bool col_major = (rows == 1 || s_row == 1) && (cols == 1 || s_col >= rows);
  return row_major || col_major;
}

// T: [R, C] or [G, R, C]. Strides of size-1 dims are normalised so oneDNN
// recognises a plain (ab / ba) layout.
Operand describe(Tensor t) {
  if (t.dim() == 2) t = t.unsqueeze(0);
  const int64_t G = t.size(0), R = t.size(1), C = t.size(2);
  if (!is_plain(R, C, t.stride(1), t.stride(2)) || (G > 1 && t.stride(0) < R * C)) t = t.contiguous();
  int64_t s_row = t.stride(1), s_col = t.stride(2);
  const bool row_major = (C == 1 || s_col == 1) && (R == 1 || s_row >= C);
  if (row_major) {
    s_col = 1;
    if (R == 1) s_row = C;
  } else {
    s_row = 1;
    if (C == 1) s_col = R;
  }
  const int64_t s_batch = G == 1 ? R * C : t.stride(0);
  return {t, {G, R, C}, {s_batch, s_row, s_col}, row_major};
}

dnnl::memory::data_type dnnl_type(torch::ScalarType t) {
  if (t == torch::kFloat) return dnnl::memory::data_type::f32;
  if (t == torch::kBFloat16) return dnnl::memory::data_type::bf16;
  TORCH_CHECK(false, "onednn::matmul: unsupported dtype ", c10::toString(t));
}

using Key = std::array<int64_t, 14>;

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v : k) h = (h ^ static_cast<size_t>(v)) * 1099511628211ull;
    return h;
  }
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

constexpr size_t kMaxCached = 256;  // each primitive holds JIT code (~140 kB)

// Primitives per thread.
std::unordered_map<Key, dnnl::matmul, KeyHash>& cache() {
  thread_local std::unordered_map<Key, dnnl::matmul, KeyHash> primitives;
  return primitives;
}

// ACCUMULATE: C += A · B (oneDNN's sum post-op: the product's result added
// to what C holds as it is stored, no second pass), else C = A · B.
dnnl::matmul& cached(const Key& key, bool accumulate, const std::function<dnnl::matmul::desc()>& make) {
  auto& primitives = cache();
  auto found = primitives.find(key);
  if (found != primitives.end()) return found->second;
  if (primitives.size() >= kMaxCached) primitives.clear();
  dnnl::primitive_attr attr;
  if (accumulate) {
    dnnl::post_ops sum;
    sum.append_sum(1.0f);
    attr.set_post_ops(sum);
  }
  dnnl::matmul::primitive_desc pd(make(), attr, cpu_engine());
  return primitives.emplace(key, dnnl::matmul(pd)).first->second;
}

// The key's last field: which kind of primitive (shaped 0, run-time 1), and whether it accumulates.
int64_t kind(int64_t runtime, bool accumulate) { return 2 * runtime + (accumulate ? 1 : 0); }

dnnl::matmul& shaped_primitive(const Operand& a, const Operand& b, const dnnl::memory::dims& c_dims,
                               dnnl::memory::data_type in, dnnl::memory::data_type out, bool accumulate) {
  const Key key{a.dims[0], a.dims[1], a.dims[2], b.dims[0], b.dims[2], a.strides[0], a.strides[1],
                a.strides[2], b.strides[0], b.strides[1], b.strides[2], static_cast<int64_t>(in),
                static_cast<int64_t>(out), kind(0, accumulate)};
  return cached(key, accumulate, [&] {
    return dnnl::matmul::desc({a.dims, in, a.strides}, {b.dims, in, b.strides},
                              {c_dims, out, dnnl::memory::format_tag::abc});
  });
}

dnnl::matmul& runtime_primitive(const Operand& a, const Operand& b, dnnl::memory::data_type in,
                                dnnl::memory::data_type out, bool accumulate) {
  const Key key{-1, a.row_major, b.row_major, static_cast<int64_t>(in), static_cast<int64_t>(out), 0, 0, 0, 0, 0, 0, 0, 0,
                kind(1, accumulate)};
  return cached(key, accumulate, [&] {
    const dnnl::memory::dims any(3, DNNL_RUNTIME_DIM_VAL);
    return dnnl::matmul::desc({any, in, a.tag()}, {any, in, b.tag()}, {any, out, dnnl::memory::format_tag::abc});
  });
}

std::atomic<bool> g_count_time{false};
std::atomic<int64_t> g_product_ns{0};
std::atomic<double> g_product_flops{0};

void execute(dnnl::matmul& matmul, const Operand& a, const Operand& b, const Tensor& c) {
  BAKALLM_TRACE("onednn_product");  // the product alone, for a trace's share of time in products
  const bool timed = g_count_time.load(std::memory_order_relaxed);
  const auto start = timed ? Clock::now() : Clock::time_point();
  auto& engine = cpu_engine();
  thread_local dnnl::stream stream(engine);
  const auto in = dnnl_type(a.tensor.scalar_type()), out = dnnl_type(c.scalar_type());
  const dnnl::memory::dims c_dims{c.size(0), c.size(1), c.size(2)};
  dnnl::memory a_mem({a.dims, in, a.strides}, engine, a.tensor.data_ptr());
  dnnl::memory b_mem({b.dims, in, b.strides}, engine, b.tensor.data_ptr());
  dnnl::memory c_mem({c_dims, out, dnnl::memory::format_tag::abc}, engine, c.data_ptr());
  matmul.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
  stream.wait();
  if (timed) {
    g_product_ns.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count(),
                           std::memory_order_relaxed);
    const double flops = 2.0 * static_cast<double>(c.size(0)) * c.size(1) * c.size(2) * a.dims[2];  // 2·G·M·N·K
    for (double was = g_product_flops.load(); !g_product_flops.compare_exchange_weak(was, was + flops);) {
    }
  }
}

// C [G, M, N] = A · B over slice-dense operands: one primitive per layout
// and dtype whatever the sizes (oneDNN's jit gemm; measured as fast as the
// per-shape brgemm on the model's products where the CPU has no AMX, 2x
// faster on decoding's gemv, and free of brgemm's ~0.4 ms creation per new
// shape, which documents of every length and a growing key count would
// pay). Batches whose slices lie apart, or where one side is shared, run
// slice by slice.
void runtime_product(const Operand& a, const Operand& b, const Tensor& c, bool accumulate) {
  const auto in = dnnl_type(a.tensor.scalar_type());
  auto& matmul = runtime_primitive(a, b, in, dnnl_type(c.scalar_type()), accumulate);
  if (c.size(0) == 1 || (a.dims[0] == b.dims[0] && a.dense() && b.dense())) {
    execute(matmul, a, b, c);
    return;
  }
  auto slice = [](const Operand& op, int64_t g) { return op.dims[0] == 1 ? op : describe(op.tensor.select(0, g)); };
  for (int64_t g = 0; g < c.size(0); ++g) execute(matmul, slice(a, g), slice(b, g), c.narrow(0, g, 1));
}

std::atomic<int> g_path{static_cast<int>(ProductPath::automatic)};

}  // namespace

// Whether oneDNN's per-shape bfloat16 product runs on AMX tiles here (its
// brgemm kernel "brg:avx512_core_amx_bf16"): asked once, by the kernel it
// picks for a small product.
bool amx_products() {
  static const bool amx = [] {
    try {
      using dt = dnnl::memory::data_type;
      const dnnl::memory::dims a{64, 64};
      const dnnl::matmul::primitive_desc pd(
          dnnl::matmul::desc({a, dt::bf16, dnnl::memory::format_tag::ab}, {a, dt::bf16, dnnl::memory::format_tag::ab},
                             {a, dt::f32, dnnl::memory::format_tag::ab}),
          cpu_engine());
      return std::string(pd.impl_info_str()).find("amx") != std::string::npos;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return amx;
}

void set_product_path(ProductPath path) { g_path = static_cast<int>(path); }

bool available() { return true; }

bool supports(torch::ScalarType dtype) {
  if (dtype != torch::kBFloat16) return dtype == torch::kFloat;
  // oneDNN builds a bfloat16 matmul only where the CPU has AVX-512 (AVX2
  // machines, AMD's Zen 1 to 3: "could not create a primitive descriptor"):
  // one small product tells, the first time a bfloat16 one is asked for.
  static const bool bfloat16 = [] {
    try {
      const auto a = torch::ones({2, 32}, torch::kBFloat16), b = torch::ones({32, 2}, torch::kBFloat16);
      return matmul(a, b, torch::kFloat).allclose(torch::full({2, 2}, 32.0f));
    } catch (const std::exception&) {
      return false;
    }
  }();
  return bfloat16;
}

namespace {

// The products' count G: a's or b's leading dimension where one is 3-D, else 1.
int64_t batches(const Tensor& a, const Tensor& b) {
  return std::max<int64_t>(a.dim() == 3 ? a.size(0) : 1, b.dim() == 3 ? b.size(0) : 1);
}

// C (contiguous [G, M, N] or [M, N]) = A · B, or += where ACCUMULATE.
void product_into(const Tensor& a_in, const Tensor& b_in, const Tensor& c, bool accumulate) {
  TORCH_CHECK(a_in.device().is_cpu() && b_in.device().is_cpu(), "onednn::matmul: CPU tensors only");
  TORCH_CHECK(a_in.scalar_type() == b_in.scalar_type(), "onednn::matmul: operands differ in dtype");
  TORCH_CHECK((a_in.dim() == 2 || a_in.dim() == 3) && (b_in.dim() == 2 || b_in.dim() == 3) &&
                  a_in.size(-1) == b_in.size(-2),
              "onednn::matmul: shapes ", a_in.sizes(), " and ", b_in.sizes(), " do not multiply");
  const int64_t G = a_in.dim() == 3 ? a_in.size(0) : 1;
  TORCH_CHECK(b_in.dim() == 2 || a_in.dim() == 2 || b_in.size(0) == G, "onednn::matmul: batch sizes differ");
  const auto c3 = c.dim() == 2 ? c.unsqueeze(0) : c;
  if (c3.numel() == 0) return;
  if (a_in.size(-1) == 0) {
    if (!accumulate) c3.zero_();
    return;
  }
  const auto a = describe(a_in), b = describe(b_in);
  const auto path = static_cast<ProductPath>(g_path.load(std::memory_order_relaxed));
  const auto dtype = a_in.scalar_type();
  const bool shaped = path == ProductPath::per_shape ||
                      (path == ProductPath::automatic &&
                       per_shape(c3.size(0), c3.size(1), a.dims[2], c3.size(2), dtype,
                                 dtype == torch::kBFloat16 && amx_products(),  // asks for AMX only then
                                 !a.row_major));
  if (a.slice_dense() && b.slice_dense() && !shaped) {
    runtime_product(a, b, c3, accumulate);
  } else {  // padded rows or columns, or brgemm (per_shape): a primitive for this exact shape and layout
    const auto in = dnnl_type(a_in.scalar_type());
    execute(shaped_primitive(a, b, {c3.size(0), c3.size(1), c3.size(2)}, in, dnnl_type(c.scalar_type()), accumulate),
            a, b, c3);
  }
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in, torch::ScalarType out) {
  const bool batched = a_in.dim() == 3 || b_in.dim() == 3;
  const int64_t G = batches(a_in, b_in);
  TORCH_CHECK(a_in.dim() >= 2 && b_in.dim() >= 2, "onednn::matmul: shapes ", a_in.sizes(), " and ", b_in.sizes(),
              " do not multiply");
  auto c = torch::empty({G, a_in.size(-2), b_in.size(-1)}, a_in.options().dtype(out));
  product_into(a_in, b_in, c, /*accumulate=*/false);
  return batched ? c : c.squeeze(0);
}

void matmul_add(const Tensor& a, const Tensor& b, const Tensor& c) {
  const int64_t G = batches(a, b);
  TORCH_CHECK(c.is_contiguous() && (c.scalar_type() == torch::kFloat || c.scalar_type() == a.scalar_type()) &&
                  a.dim() >= 2 && b.dim() >= 2 && c.size(-2) == a.size(-2) && c.size(-1) == b.size(-1) &&
                  (c.dim() == 2 ? G == 1 : c.dim() == 3 && c.size(0) == G),
              "onednn::matmul_add: shapes ", a.sizes(), " · ", b.sizes(), " into ", c.sizes(), " (", c.scalar_type(), ")");
  product_into(a, b, c, /*accumulate=*/true);
}

size_t cached_primitives() { return cache().size(); }

void count_product_time(bool on) { g_count_time = on; }

double product_seconds() { return 1e-9 * static_cast<double>(g_product_ns.load()); }

double product_flops() { return g_product_flops.load(); }

#else  // no oneDNN in this build

bool available() { return false; }

bool supports(torch::ScalarType) { return false; }

torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b, torch::ScalarType out) {
  TORCH_CHECK(false, "onednn::matmul: this build has no oneDNN");
}

void matmul_add(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& c) {
  TORCH_CHECK(false, "onednn::matmul_add: this build has no oneDNN");
}

size_t cached_primitives() { return 0; }

void set_product_path(ProductPath) {}

bool amx_products() { return false; }

void count_product_time(bool) {}

double product_seconds() { return 0.0; }

double product_flops() { return 0.0; }

#endif

}  // namespace bakallm::onednn
