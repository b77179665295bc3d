// New tensors and views made without the dispatcher (ops/fast_tensor.h) are
// what libtorch's own calls make: sizes, strides, offset, dtype, shared
// storage, inference-ness; autograd's graph where one is recorded.
#include <gtest/gtest.h>

#include "ops/fast_tensor.h"

namespace bakallm {
namespace {

void expect_same_view(const torch::Tensor& got, const torch::Tensor& want) {
  EXPECT_EQ(got.sizes(), want.sizes());
  EXPECT_EQ(got.strides(), want.strides());
  EXPECT_EQ(got.storage_offset(), want.storage_offset());
  EXPECT_EQ(got.scalar_type(), want.scalar_type());
  EXPECT_EQ(got.is_contiguous(), want.is_contiguous());
  EXPECT_EQ(got.is_inference(), want.is_inference());
  EXPECT_TRUE(got.is_alias_of(want));
  EXPECT_TRUE(torch::equal(got, want));
}

TEST(FastTensor, EmptyRowsIsAtEmpty) {
  for (bool inference : {false, true}) {
    c10::optional<c10::InferenceMode> mode;
    if (inference) mode.emplace();
    const auto x = torch::randn({2, 3, 5}).to(torch::kBFloat16);
    const auto y = empty_as(x);
    EXPECT_EQ(y.sizes(), x.sizes());
    EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(y.is_contiguous());
    EXPECT_EQ(y.is_inference(), inference);
    const auto z = empty_rows({4, 7}, torch::kFloat, torch::kCPU);
    EXPECT_EQ(z.sizes(), (std::vector<int64_t>{4, 7}));
    EXPECT_EQ(z.scalar_type(), torch::kFloat);
    EXPECT_EQ(z.is_inference(), inference);
    if (!inference) {
      EXPECT_TRUE(z.requires_grad_(true).requires_grad());
    }
  }
}

TEST(FastTensor, NarrowRowsIsNarrow) {
  c10::InferenceMode mode;
  const auto buffer = torch::randn({2, 9, 6});
  const auto strided = buffer.transpose(1, 2);  // not contiguous
  for (const auto& t : {buffer, strided})
    for (int64_t dim : {0, 1, 2, -1})
      for (int64_t start : {0, 1})
        for (int64_t length : {0, 1}) expect_same_view(narrow_rows(t, dim, start, length), t.narrow(dim, start, length));
  expect_same_view(narrow_rows(buffer, 1, 3, 6), buffer.narrow(1, 3, 6));
  auto view = narrow_rows(buffer, 1, 4, 2);
  view.fill_(7);  // writes the buffer's rows 4 and 5
  EXPECT_TRUE(torch::equal(buffer.narrow(1, 4, 2), torch::full({2, 2, 6}, 7.0f)));
  EXPECT_THROW(narrow_rows(buffer, 1, 8, 2), c10::Error);
  EXPECT_THROW(narrow_rows(buffer, 3, 0, 1), c10::Error);
}

TEST(FastTensor, NarrowRowsKeepsTheGraphOutsideInference) {
  const auto x = torch::randn({3, 4}, torch::requires_grad());
  const auto v = narrow_rows(x, 1, 1, 2);
  EXPECT_TRUE(v.requires_grad());
  v.sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), torch::tensor({0.0f, 1.0f, 1.0f, 0.0f}).expand({3, 4})));
}

TEST(FastTensor, SelectRowsIsSelect) {
  c10::InferenceMode mode;
  const auto buffer = torch::randn({2, 9, 6});
  const auto strided = buffer.transpose(1, 2);  // not contiguous
  for (const auto& t : {buffer, strided})
    for (int64_t dim : {0, 1, 2, -1})
      for (int64_t index : {int64_t{0}, t.size(dim) - 1}) expect_same_view(select_rows(t, dim, index), t.select(dim, index));
  EXPECT_THROW(select_rows(buffer, 1, 9), c10::Error);
  EXPECT_THROW(select_rows(buffer, 3, 0), c10::Error);
}

TEST(FastTensor, SlicesApartIsANarrowAlongTime) {
  const auto t = torch::randn({3, 10, 8});
  EXPECT_TRUE(slices_apart(t.narrow(1, 2, 5)));     // the cat's gradient, one part
  EXPECT_TRUE(slices_apart(t.narrow(1, 0, 5).reshape({3, 10, 4})));  // the same viewed in halves
  EXPECT_FALSE(slices_apart(t));                    // contiguous
  EXPECT_FALSE(slices_apart(t.narrow(0, 1, 2)));    // contiguous too
  EXPECT_FALSE(slices_apart(t.transpose(1, 2)));    // a slice not contiguous
  EXPECT_FALSE(slices_apart(t.narrow(2, 0, 4)));    // rows with gaps
  EXPECT_FALSE(slices_apart(t.narrow(1, 2, 5).narrow(0, 0, 1)));  // one slice (contiguous)
  EXPECT_FALSE(slices_apart(torch::randn({5})));
}

TEST(FastTensor, AddRowsIsAdd) {
  for (bool inference : {false, true}) {
    c10::optional<c10::InferenceMode> mode;
    if (inference) mode.emplace();
    const auto x = torch::randn({1, 3, 40}), same = torch::randn({1, 3, 40}), bias = torch::randn({40});
    for (const auto& y : {same, bias}) {
      const auto got = add_rows(x, y), want = x + y;
      EXPECT_TRUE(torch::equal(got, want));
      EXPECT_EQ(got.sizes(), want.sizes());
      EXPECT_EQ(got.is_inference(), inference);
    }
    // Others are libtorch's: bfloat16, broadcasting of other shapes, a mismatch.
    const auto half = x.to(torch::kBFloat16);
    EXPECT_EQ(add_rows(half, half).scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(torch::equal(add_rows(x, torch::ones({3, 1})), x + 1));
    EXPECT_THROW(add_rows(x, torch::ones({7})), c10::Error);
  }
}

TEST(FastTensor, AddRowsKeepsTheGraph) {
  const auto x = torch::randn({2, 5}, torch::requires_grad()), b = torch::randn({5}, torch::requires_grad());
  const auto y = add_rows(x, b);
  EXPECT_TRUE(y.requires_grad());
  (y * y).sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), 2 * (x + b).detach()));
  EXPECT_TRUE(torch::allclose(b.grad(), 2 * (x + b).detach().sum(0)));
}

}  // namespace
}  // namespace bakallm
