// onednn::matmul: every operand layout it accepts, against torch::matmul in double.
#include <gtest/gtest.h>

#include "ops/matmul.h"
#include "ops/onednn.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

using test::all_close;

torch::Tensor reference(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::matmul(a.to(torch::kDouble), b.to(torch::kDouble)).to(torch::kFloat);
}

// The operand dtypes oneDNN multiplies on this CPU: float32, and bfloat16 where it has a kernel.
std::vector<torch::ScalarType> product_dtypes() {
  std::vector<torch::ScalarType> dtypes{torch::kFloat};
  if (onednn::supports(torch::kBFloat16)) dtypes.push_back(torch::kBFloat16);
  return dtypes;
}

class OneDnn : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!onednn::available()) GTEST_SKIP() << "this build has no oneDNN (libdnnl-dev not found at configure time)";
    torch::manual_seed(0);
  }
};

TEST_F(OneDnn, RowAndColumnMajorOperands) {
  auto a = torch::randn({37, 53}), b = torch::randn({53, 29});
  auto at = torch::randn({53, 37}).t(), bt = torch::randn({29, 53}).t();  // column-major views
  for (auto& [x, y] : std::vector<std::pair<torch::Tensor, torch::Tensor>>{{a, b}, {at, b}, {a, bt}, {at, bt}}) {
    auto c = onednn::matmul(x, y, torch::kFloat);
    EXPECT_TRUE(c.is_contiguous());
    EXPECT_EQ(c.sizes(), (std::vector<int64_t>{37, 29}));
    EXPECT_TRUE(all_close(c, reference(x, y), 1e-5, 1e-5));
  }
}

TEST_F(OneDnn, BatchedStridedAndBroadcast) {
  auto buffer = torch::randn({3, 50, 24});
  auto a = buffer.narrow(1, 5, 40);                  // rows padded apart in the batch: [3, 40, 24]
  auto b = torch::randn({3, 31, 24}).transpose(1, 2);  // [3, 24, 31], column-major slices
  EXPECT_TRUE(all_close(onednn::matmul(a, b, torch::kFloat), reference(a, b), 1e-5, 1e-5));
  auto w = torch::randn({24, 17});                   // shared right factor
  EXPECT_TRUE(all_close(onednn::matmul(a, w, torch::kFloat), reference(a, w), 1e-5, 1e-5));
  auto v = torch::randn({40, 24});                   // shared left factor
  EXPECT_TRUE(all_close(onednn::matmul(v, b, torch::kFloat), reference(v, b), 1e-5, 1e-5));
}

TEST_F(OneDnn, NonPlainViewsAreCopiedFirst) {
  auto a = torch::randn({30, 40}).slice(1, 0, 40, 2);  // column stride 2: neither layout
  auto b = torch::randn({20, 9});
  EXPECT_TRUE(all_close(onednn::matmul(a, b, torch::kFloat), reference(a, b), 1e-5, 1e-5));
}

TEST_F(OneDnn, SingleRowAndEmptyInner) {
  auto a = torch::randn({1, 320}), b = torch::randn({1280, 320});
  EXPECT_TRUE(all_close(onednn::matmul(a, b.t(), torch::kFloat), reference(a, b.t()), 1e-5, 1e-5));
  auto c = onednn::matmul(torch::randn({4, 0}), torch::randn({0, 6}), torch::kFloat);
  EXPECT_TRUE(torch::equal(c, torch::zeros({4, 6})));
}

TEST_F(OneDnn, FewRowsAnyKeyCount) {  // decoding: one query row against a growing window
  auto keys = torch::randn({3, 60, 24}), values = torch::randn({3, 60, 16});
  auto q = torch::randn({3, 1, 24});
  for (int64_t seen : {1, 7, 33, 60}) {
    auto K = keys.narrow(1, 0, seen), V = values.narrow(1, 0, seen);  // batches lie apart
    auto scores = onednn::matmul(q, K.transpose(1, 2), torch::kFloat);  // [3, 1, seen]
    EXPECT_TRUE(all_close(scores, reference(q, K.transpose(1, 2)), 1e-5, 1e-5));
    EXPECT_TRUE(all_close(onednn::matmul(scores, V, torch::kFloat), reference(scores, V), 1e-5, 1e-5));
  }
  auto w = torch::randn({24, 9});
  EXPECT_TRUE(all_close(onednn::matmul(q, w, torch::kFloat), reference(q, w), 1e-5, 1e-5));
  auto row = torch::randn({2, 24});  // shared left factor, few rows
  EXPECT_TRUE(all_close(onednn::matmul(row, keys.transpose(1, 2), torch::kFloat),
                        reference(row, keys.transpose(1, 2)), 1e-5, 1e-5));
}

// Where oneDNN has no bfloat16 kernel (AVX2 CPUs) supports says so and the
// product throws; matmul_nt then takes libtorch's (MatmulNT.Bfloat16ComputeStaysClose).
TEST_F(OneDnn, Bfloat16InFloat32Out) {
  auto a = torch::randn({64, 128}), b = torch::randn({128, 96});
  EXPECT_TRUE(onednn::supports(torch::kFloat));
  if (!onednn::supports(torch::kBFloat16)) {
    EXPECT_THROW(onednn::matmul(a.to(torch::kBFloat16), b.to(torch::kBFloat16), torch::kFloat), std::exception);
    return;
  }
  auto c = onednn::matmul(a.to(torch::kBFloat16), b.to(torch::kBFloat16), torch::kFloat);
  EXPECT_EQ(c.scalar_type(), torch::kFloat);
  // Exact products of the rounded inputs, accumulated in float32.
  auto exact = reference(a.to(torch::kBFloat16).to(torch::kFloat), b.to(torch::kBFloat16).to(torch::kFloat));
  EXPECT_TRUE(all_close(c, exact, 1e-4, 1e-4));
}

TEST_F(OneDnn, PaddedRowsUseAShapedPrimitive) {
  auto a = torch::randn({30, 50}).narrow(1, 0, 40);  // rows 50 apart, 40 used
  auto b = torch::randn({40, 64}).narrow(1, 3, 20);
  EXPECT_TRUE(all_close(onednn::matmul(a, b, torch::kFloat), reference(a, b), 1e-5, 1e-5));
  auto batch = torch::randn({2, 30, 50}).narrow(2, 0, 40);
  EXPECT_TRUE(all_close(onednn::matmul(batch, b, torch::kFloat), reference(batch, b), 1e-5, 1e-5));
}

// matmul_add: C += A · B in the product (oneDNN's sum post-op), for plain,
// batched, padded (a shaped primitive) and bfloat16 operands; what C held
// is kept, and an empty inner dimension adds nothing.
TEST_F(OneDnn, MatmulAddAddsTheProductToC) {
  auto check = [](const torch::Tensor& a, const torch::Tensor& b, double tolerance) {
    const auto before = a.dim() == 3 ? torch::randn({a.size(0), a.size(1), b.size(-1)}) : torch::randn({a.size(0), b.size(-1)});
    auto c = before.clone();
    onednn::matmul_add(a, b, c);
    const auto expected = (before.to(torch::kDouble) + torch::matmul(a.to(torch::kDouble), b.to(torch::kDouble))).to(torch::kFloat);
    EXPECT_TRUE(all_close(c, expected, tolerance, tolerance)) << a.sizes() << " · " << b.sizes();
  };
  check(torch::randn({37, 53}), torch::randn({53, 29}), 1e-5);
  check(torch::randn({29, 53}).t(), torch::randn({29, 53}), 1e-5);           // column-major A
  check(torch::randn({3, 20, 40}), torch::randn({40, 24}), 1e-5);           // a shared right factor
  check(torch::randn({3, 20, 40}), torch::randn({3, 40, 24}), 1e-5);        // batched both
  check(torch::randn({30, 50}).narrow(1, 0, 40), torch::randn({40, 20}), 1e-5);  // padded rows
  if (onednn::supports(torch::kBFloat16)) {  // bfloat16 operands, float32 C: exact operands, so the float32 tolerance
    check(torch::randn({33, 64}).to(torch::kBFloat16), torch::randn({64, 48}).to(torch::kBFloat16), 1e-5);
  }
  auto c = torch::randn({5, 7});
  const auto kept = c.clone();
  onednn::matmul_add(torch::randn({5, 0}), torch::randn({0, 7}), c);
  EXPECT_TRUE(torch::equal(c, kept));
  EXPECT_THROW(onednn::matmul_add(torch::randn({5, 4}), torch::randn({4, 7}), torch::randn({7, 5}).t()), c10::Error);
}

TEST_F(OneDnn, SizesDoNotMultiplyPrimitives) {
  onednn::matmul(torch::randn({40, 4}), torch::randn({4, 1}), torch::kFloat);
  const auto before = onednn::cached_primitives();
  for (int64_t n = 1; n <= 300; ++n)  // every document length, every key count
    onednn::matmul(torch::randn({n % 70 + 1, 4}), torch::randn({4, n}), torch::kFloat);
  EXPECT_EQ(onednn::cached_primitives(), before);
  for (int64_t n = 1; n <= 300; ++n)  // padded rows: one primitive per shape, bounded
    onednn::matmul(torch::randn({8, 6}).narrow(1, 0, 4), torch::randn({4, n}), torch::kFloat);
  EXPECT_LE(onednn::cached_primitives(), 256u);
}

// Per-shape (brgemm) primitives for bfloat16 products with AMX, and for
// float32 products whose left operand is read transposed (weight gradients),
// only where rows and work pay for a primitive's creation: decoding's
// few-row products and the other float32 products keep the one run-time
// primitive.
TEST(OneDnnPath, PerShapeForLargeBfloat16ProductsOnAmxAndTransposedFloat32) {
  const auto bf16 = torch::kBFloat16, f32 = torch::kFloat;
  for (bool a_transposed : {false, true}) {
    EXPECT_TRUE(onednn::per_shape(1, 2312, 320, 320, bf16, true, a_transposed));  // tiny's step: B * (W + 2M + 2) rows
    EXPECT_TRUE(onednn::per_shape(4, 578, 640, 1156, bf16, true, a_transposed));  // its attention, batched
    EXPECT_FALSE(onednn::per_shape(1, 2312, 320, 320, bf16, false, a_transposed));  // no AMX: the jit gemm is as fast
    EXPECT_FALSE(onednn::per_shape(1, 1, 4096, 32000, bf16, true, a_transposed));  // a decoded token's gemv
    EXPECT_FALSE(onednn::per_shape(1, onednn::kPerShapeMinRows - 1, 4096, 4096, bf16, true, a_transposed));
    EXPECT_FALSE(onednn::per_shape(1, 128, 128, 128, bf16, true, a_transposed));  // too little work for a primitive's creation
    EXPECT_TRUE(onednn::per_shape(1, onednn::kPerShapeMinRows, 4096, 4096, bf16, true, a_transposed));
    EXPECT_TRUE(onednn::per_shape(1, 1024, onednn::kPerShapeMaxDepth, 320, bf16, true, a_transposed));
    EXPECT_FALSE(onednn::per_shape(1, 1024, 32000, 320, bf16, true, a_transposed));  // the head's dlogits · W: the jit gemm is faster
  }
  // float32: the weight gradients dyᵀ · x (tiny's: [320, 2,312] · [2,312, 320]),
  // the attention's dSᵀ · Q, the head's dlogitsᵀ · hidden, with or without AMX
  for (bool amx : {false, true}) {
    EXPECT_TRUE(onednn::per_shape(1, 320, 2312, 320, f32, amx, true));
    EXPECT_TRUE(onednn::per_shape(4, 1156, 578, 640, f32, amx, true));
    EXPECT_TRUE(onednn::per_shape(1, 32000, 1024, 320, f32, amx, true));
    EXPECT_FALSE(onednn::per_shape(1, 2312, 320, 320, f32, amx, false));  // x · Wᵀ, dy · W: the jit gemm
    EXPECT_FALSE(onednn::per_shape(1, 1, 4096, 32000, f32, amx, true));
    EXPECT_FALSE(onednn::per_shape(1, 128, 128, 128, f32, amx, true));
  }
}

// In the automatic path a float32 weight gradient (its left operand a
// transposed view) keeps a primitive for its shape, exact; x · Wᵀ of the same
// sizes keeps none. A small product of each layout first has its run-time
// primitive made. Operands in [0, 1): sums without cancellation, within the
// relative tolerance whatever order each kernel adds in.
TEST_F(OneDnn, Float32WeightGradientsRunPerShape) {
  const auto dy = torch::rand({1024, 128}), x = torch::rand({1024, 320}), w = torch::rand({128, 320});
  ASSERT_TRUE(onednn::per_shape(1, 128, 1024, 320, torch::kFloat, false, true));
  onednn::matmul(dy.narrow(0, 0, 4).t(), x.narrow(0, 0, 4), torch::kFloat);
  onednn::matmul(x.narrow(0, 0, 4), w.t(), torch::kFloat);
  const auto before = onednn::cached_primitives();
  EXPECT_TRUE(all_close(onednn::matmul(dy.t(), x, torch::kFloat), reference(dy.t(), x), 1e-5, 1e-5));
  EXPECT_EQ(onednn::cached_primitives(), before + 1);
  EXPECT_TRUE(all_close(onednn::matmul(x, w.t(), torch::kFloat), reference(x, w.t()), 1e-5, 1e-5));
  EXPECT_EQ(onednn::cached_primitives(), before + 1);
}

// A long-depth product in the automatic path runs the run-time primitive:
// after one small product of the same layout (which has it made), it keeps no
// new primitive, on any CPU (in bfloat16 on AMX a per-shape one would be kept).
// Operands in [0, 1): a sum of 16k terms without cancellation, within the
// relative tolerance.
TEST_F(OneDnn, LongDepthProductsKeepTheRunTimePrimitive) {
  for (auto dtype : product_dtypes()) {
    const auto a = torch::rand({64, onednn::kPerShapeMaxDepth + 64}).to(dtype);
    const auto b = torch::rand({onednn::kPerShapeMaxDepth + 64, 32}).to(dtype);
    onednn::matmul(a.narrow(1, 0, 8).contiguous(), b.narrow(0, 0, 8).contiguous(), torch::kFloat);
    const auto before = onednn::cached_primitives();
    EXPECT_TRUE(all_close(onednn::matmul(a, b, torch::kFloat), reference(a, b), 1e-5, 1e-5)) << c10::toString(dtype);
    EXPECT_EQ(onednn::cached_primitives(), before) << c10::toString(dtype);
  }
}

// Both paths give the product (float32, and bfloat16 where oneDNN has it):
// plain, column-major A (a weight's gradient dyᵀ · x), batched, a shared
// right factor, and C += A · B. Run again at other sizes, the per-shape path
// keeps a primitive for each of the five products and the run-time path none,
// so each round ran the path it names.
TEST_F(OneDnn, RunTimeAndPerShapePathsAgree) {
  struct Restore {
    ~Restore() { onednn::set_product_path(onednn::ProductPath::automatic); }
  } restore;
  int64_t rows = 96;  // new sizes each round
  for (auto path : {onednn::ProductPath::run_time, onednn::ProductPath::per_shape}) {
    onednn::set_product_path(path);
    for (auto dtype : product_dtypes()) {
      for (int round = 0; round < 2; ++round) {
        ++rows;
        const auto in = [&](torch::Tensor t) { return t.to(dtype); };
        const auto a = in(torch::randn({rows, 128})), at = in(torch::randn({128, rows})).t();
        const auto w = in(torch::randn({80, 128})), v = in(torch::randn({64, 40}));
        const auto batch = in(torch::randn({3, rows, 64})), keys = in(torch::randn({3, 48, 64}));
        const auto before = onednn::cached_primitives();
        // bfloat16 operands are exact in float32 and the sums are float32: the float32 tolerance holds.
        EXPECT_TRUE(all_close(onednn::matmul(a, w.t(), torch::kFloat), reference(a, w.t()), 1e-5, 1e-5));
        EXPECT_TRUE(all_close(onednn::matmul(at, w.t(), torch::kFloat), reference(at, w.t()), 1e-5, 1e-5));
        EXPECT_TRUE(all_close(onednn::matmul(batch, keys.transpose(1, 2), torch::kFloat),
                              reference(batch, keys.transpose(1, 2)), 1e-5, 1e-5));
        EXPECT_TRUE(all_close(onednn::matmul(batch, v, torch::kFloat), reference(batch, v), 1e-5, 1e-5));
        auto c = torch::randn({rows, 80});
        const auto expected =
            (c.to(torch::kDouble) + torch::matmul(a.to(torch::kDouble), w.t().to(torch::kDouble))).to(torch::kFloat);
        onednn::matmul_add(a, w.t(), c);
        EXPECT_TRUE(all_close(c, expected, 1e-5, 1e-5));
        if (round == 1) {
          EXPECT_EQ(onednn::cached_primitives(), before + (path == onednn::ProductPath::per_shape ? 5 : 0))
              << c10::toString(dtype);
        }
      }
    }
  }
}

TEST_F(OneDnn, RejectsMismatchedOperands) {
  EXPECT_THROW(onednn::matmul(torch::randn({3, 4}), torch::randn({5, 6}), torch::kFloat), c10::Error);
  EXPECT_THROW(onednn::matmul(torch::randn({3, 4}), torch::randn({4, 6}, torch::kDouble), torch::kFloat), c10::Error);
}

}  // namespace
}  // namespace bakallm
