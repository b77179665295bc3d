// RowBuffer (model/state.h), the decoder's keys, values and sources: rows
// appended to a reserved buffer come back as the concatenation of what was
// appended (float32 exactly; into a bfloat16 buffer rounded as .to rounds),
// for several streams at once, through the direct copy and through copy_ (rows
// not contiguous); rows of another shape are refused.
#include <gtest/gtest.h>

#include "model/state.h"

namespace bakallm {
namespace {

TEST(RowBuffer, ReservedRowsAreWhatWasAppended) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    RowBuffer buffer;
    buffer.reserve({2, 10, 6}, torch::TensorOptions().dtype(dtype));  // two streams, room for 10 rows
    const auto a = torch::randn({2, 3, 6}), b = torch::randn({2, 1, 6});
    const auto c = torch::randn({2, 6, 4}).transpose(1, 2);  // [2, 4, 6], not contiguous: copy_
    buffer.append(a);
    buffer.append(b);
    const auto rows = buffer.append(c);
    EXPECT_EQ(buffer.length(), 8);
    EXPECT_EQ(rows.scalar_type(), dtype);
    EXPECT_TRUE(torch::equal(rows, torch::cat({a, b, c}, 1).to(dtype))) << dtype;
    EXPECT_THROW(buffer.append(torch::randn({2, 1, 5})), c10::Error);  // another row width
    EXPECT_THROW(buffer.append(torch::randn({2, 3, 6})), c10::Error);  // past the capacity
  }
}

TEST(RowBuffer, UnreservedRowsGrow) {
  RowBuffer buffer;
  const auto a = torch::randn({1, 2, 4}), b = torch::randn({1, 3, 4});
  buffer.append(a);
  EXPECT_TRUE(torch::equal(buffer.append(b), torch::cat({a, b}, 1)));
}

// rows_from(first): the last append's own tensor where it starts at FIRST,
// unreserved (a window's keys handed on as the next one's cache: no slice for
// autograd to undo); the same values as a narrow of rows() otherwise.
TEST(RowBuffer, RowsFromTheLastAppendAreThatTensor) {
  RowBuffer buffer;
  const auto a = torch::randn({2, 3, 4}), b = torch::randn({2, 5, 4}), c = torch::randn({2, 1, 4});
  buffer.append(a);
  EXPECT_TRUE(buffer.rows_from(0).is_same(a));
  buffer.append(b);
  EXPECT_TRUE(buffer.rows_from(3).is_same(b));
  EXPECT_TRUE(torch::equal(buffer.rows_from(1), torch::cat({a, b}, 1).narrow(1, 1, 7)));
  buffer.append(c);
  EXPECT_TRUE(torch::equal(buffer.rows_from(3), torch::cat({b, c}, 1)));  // two appends: a narrow
  RowBuffer reserved;
  reserved.reserve({2, 10, 4}, torch::TensorOptions());
  reserved.append(a);
  reserved.append(b);
  EXPECT_FALSE(reserved.rows_from(3).is_same(b));
  EXPECT_TRUE(torch::equal(reserved.rows_from(3), b));
}

// The cache's gradient: a window's keys reach the next window as the appended
// tensor, so backward through cache() gives them the same gradient as
// through a narrow of the concatenation.
TEST(RowBuffer, GradientThroughRowsFromIsTheNarrowsGradient) {
  const auto past = torch::randn({2, 3, 4});
  const auto k = torch::randn({2, 5, 4}, torch::requires_grad());
  const auto w = torch::randn({2, 5, 4});
  RowBuffer buffer;
  buffer.append(past);
  buffer.append(k);
  (buffer.rows_from(3) * w).sum().backward();
  const auto direct = k.grad().clone();
  k.mutable_grad().zero_();
  (torch::cat({past, k}, 1).narrow(1, 3, 5) * w).sum().backward();
  EXPECT_TRUE(torch::equal(direct, k.grad()));
}

}  // namespace
}  // namespace bakallm
