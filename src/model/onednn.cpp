#include "model/onednn.h"

#include <array>
#include <memory>
#include <unordered_map>

#ifdef BAKALLM_HAVE_DNNL
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace bakallm::onednn {

#ifdef BAKALLM_HAVE_DNNL

namespace {

using torch::Tensor;

// A 2-D slice as oneDNN sees it: sizes and strides of [G, R, C].
struct Operand {
  Tensor tensor;  // keeps the buffer alive (contiguous copy when the view was not plain)
  dnnl::memory::dims dims, strides;
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
  if (!is_plain(R, C, t.stride(1), t.stride(2)) || (G > 1 && t.stride(0) < R * C && t.stride(0) != 0))
    t = t.contiguous();
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
  return {t, {G, R, C}, {s_batch, s_row, s_col}};
}

dnnl::memory::data_type dnnl_type(torch::ScalarType t) {
  if (t == torch::kFloat) return dnnl::memory::data_type::f32;
  if (t == torch::kBFloat16) return dnnl::memory::data_type::bf16;
  TORCH_CHECK(false, "onednn::matmul: unsupported dtype ", c10::toString(t));
}

using Key = std::array<int64_t, 17>;

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

// Primitives per thread: creating one costs ~0.4 ms, running a small one ~10 µs.
std::unordered_map<Key, dnnl::matmul, KeyHash>& cache() {
  thread_local std::unordered_map<Key, dnnl::matmul, KeyHash> primitives;
  return primitives;
}

dnnl::matmul& primitive(const Operand& a, const Operand& b, const dnnl::memory::dims& c_dims,
                        dnnl::memory::data_type in, dnnl::memory::data_type out) {
  Key key{a.dims[0], a.dims[1], a.dims[2], b.dims[0], b.dims[2],
          a.strides[0], a.strides[1], a.strides[2], b.strides[0], b.strides[1], b.strides[2],
          static_cast<int64_t>(in), static_cast<int64_t>(out), 0, 0, 0, 0};
  auto& primitives = cache();
  auto found = primitives.find(key);
  if (found != primitives.end()) return found->second;
  if (primitives.size() >= kMaxCached) primitives.clear();
  dnnl::memory::desc a_md(a.dims, in, a.strides), b_md(b.dims, in, b.strides),
      c_md(c_dims, out, dnnl::memory::format_tag::abc);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), cpu_engine());
  return primitives.emplace(key, dnnl::matmul(pd)).first->second;
}

}  // namespace

bool available() { return true; }

Tensor matmul(const Tensor& a_in, const Tensor& b_in, torch::ScalarType out) {
  TORCH_CHECK(a_in.device().is_cpu() && b_in.device().is_cpu(), "onednn::matmul: CPU tensors only");
  TORCH_CHECK(a_in.scalar_type() == b_in.scalar_type(), "onednn::matmul: operands differ in dtype");
  TORCH_CHECK((a_in.dim() == 2 || a_in.dim() == 3) && (b_in.dim() == 2 || b_in.dim() == 3) &&
                  a_in.size(-1) == b_in.size(-2),
              "onednn::matmul: shapes ", a_in.sizes(), " and ", b_in.sizes(), " do not multiply");
  const bool batched = a_in.dim() == 3 || b_in.dim() == 3;
  const int64_t G = a_in.dim() == 3 ? a_in.size(0) : 1;
  TORCH_CHECK(b_in.dim() == 2 || a_in.dim() == 2 || b_in.size(0) == G, "onednn::matmul: batch sizes differ");
  const int64_t M = a_in.size(-2), N = b_in.size(-1);
  const int64_t Gc = std::max<int64_t>(G, b_in.dim() == 3 ? b_in.size(0) : 1);
  auto c = torch::empty({Gc, M, N}, a_in.options().dtype(out));
  if (c.numel() > 0 && a_in.size(-1) == 0) c.zero_();
  if (c.numel() > 0 && a_in.size(-1) > 0) {
    auto a = describe(a_in);
    auto b = describe(b_in);
    const auto in = dnnl_type(a_in.scalar_type());
    auto& matmul = primitive(a, b, {Gc, M, N}, in, dnnl_type(out));
    auto& engine = cpu_engine();
    thread_local dnnl::stream stream(engine);
    dnnl::memory a_mem({a.dims, in, a.strides}, engine, a.tensor.data_ptr());
    dnnl::memory b_mem({b.dims, in, b.strides}, engine, b.tensor.data_ptr());
    dnnl::memory c_mem({{Gc, M, N}, dnnl_type(out), dnnl::memory::format_tag::abc}, engine, c.data_ptr());
    matmul.execute(stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}});
    stream.wait();
  }
  return batched ? c : c.squeeze(0);
}

size_t cached_primitives() { return cache().size(); }

#else  // no oneDNN in this build

bool available() { return false; }

torch::Tensor matmul(const torch::Tensor& a, const torch::Tensor& b, torch::ScalarType out) {
  TORCH_CHECK(false, "onednn::matmul: this build has no oneDNN");
}

size_t cached_primitives() { return 0; }

#endif

}  // namespace bakallm::onednn
