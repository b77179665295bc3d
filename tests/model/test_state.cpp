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

}  // namespace
}  // namespace bakallm
