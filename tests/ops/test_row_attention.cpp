// The row attention (ops/row_attention.h) against softmax attention written
// out in float64 with the mask of ops/block_attention.h: one and several
// query rows, causal after earlier keys, rows that hide the past, no mask,
// keys split between threads (and parts left empty by the mask), keys and
// values read from strided buffers (the decoder's reserved ones), float32 or
// bfloat16 (the reference reads the same bfloat16 values); each on the loops
// of every instruction set this CPU runs (AVX-512, AVX2, portable).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include "ops/cpu.h"
#include "ops/isas.h"
#include "ops/row_attention.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

torch::Tensor reference(const torch::Tensor& q, const torch::Tensor& K, const torch::Tensor& V, const AttentionMask& m,
                        double scale) {
  auto d = [](const torch::Tensor& t) { return t.to(torch::kDouble); };
  auto s = torch::matmul(d(q), d(K).transpose(1, 2)) * scale;  // [G, Tq, Tk]
  const auto visible = visible_keys(m, 0, q.size(1), 0, K.size(1), torch::kCPU);
  if (visible.defined()) s = s.masked_fill(visible.logical_not(), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(s, -1), d(V));
}

void check(int64_t G, int64_t Tq, int64_t Tk, const AttentionMask& m, torch::ScalarType kv = torch::kFloat) {
  const int64_t F = 40, Dv = 24;  // widths that are not multiples of 16: the vector loops' tails
  // K and V as the first Tk rows of larger buffers (row stride F or Dv, batch stride past Tk).
  const auto K = torch::randn({G, Tk + 9, F}).to(kv).narrow(1, 0, Tk);
  const auto V = torch::randn({G, Tk + 5, Dv}).to(kv).narrow(1, 0, Tk);
  const auto q = torch::randn({G, Tq, F});
  const double scale = 1.0 / std::sqrt(static_cast<double>(F));
  for (Isa isa : test::isas()) {
    test::KernelIsa on(isa);
    EXPECT_TRUE(test::all_close(row_attention(q, K, V, m, scale), reference(q, K, V, m, scale), 1e-5, 1e-6))
        << G << " x " << Tq << " rows, " << Tk << " keys, " << kv << ", " << isa_name(isa);
  }
}

TEST(RowAttention, EqualsSoftmaxAttentionUnderEveryMask) {
  torch::manual_seed(11);
  at::set_num_threads(2);
  for (int64_t Tk : {5, 64, 300}) {  // one part; two parts of the keys
    check(1, 1, Tk, AttentionMask{true, Tk - 1, 0, {}});          // a decoded row: every key
    check(2, 3, Tk, AttentionMask{true, Tk - 3, 0, {}});          // three rows, causal among themselves
    check(2, 1, Tk, AttentionMask{});                             // no mask (the solidifier's rows)
    const auto keep = torch::tensor({true, false});
    check(2, 2, Tk, AttentionMask{true, Tk - 2, Tk / 2 - 1, keep});  // matrix 1 hides the past
  }
  // Rows that see few keys: the second part of their keys is empty.
  check(1, 4, 200, AttentionMask{true, 10, 0, {}});
}

TEST(RowAttention, ReadsBfloat16KeysAndValues) {
  torch::manual_seed(12);
  at::set_num_threads(2);
  for (int64_t Tk : {5, 300}) {
    check(1, 1, Tk, AttentionMask{true, Tk - 1, 0, {}}, torch::kBFloat16);
    check(2, 2, Tk, AttentionMask{true, Tk - 2, Tk / 2 - 1, torch::tensor({true, false})}, torch::kBFloat16);
  }
  const auto q = torch::randn({1, 1, 8}), K = torch::randn({1, 4, 8});
  EXPECT_THROW(row_attention(q, K.to(torch::kBFloat16), K, AttentionMask{}, 1.0), c10::Error);  // mixed K and V
}

TEST(RowAttention, RefusesARowThatSeesNoKey) {
  const auto q = torch::randn({1, 1, 8}), K = torch::randn({1, 4, 8}), V = torch::randn({1, 4, 8});
  EXPECT_THROW(row_attention(q, K, V, AttentionMask{true, 3, 4, torch::tensor({false})}, 1.0), c10::Error);
}

TEST(RowAttention, TakenForInferenceOnlyAndAsTheKernelChoiceSays) {
  const auto choose = [](int64_t Tq, bool inference) {
    return choose_attention_kernel(torch::kCPU, 1, Tq, 600, inference);
  };
  set_attention_kernel(AttentionKernel::kRows);
  EXPECT_EQ(choose(100, true), AttentionKernel::kRows);
  EXPECT_EQ(choose(1, false), AttentionKernel::kDense);  // a gradient wanted, or dropout
  set_attention_kernel(AttentionKernel::kDense);
  EXPECT_EQ(choose(1, true), AttentionKernel::kDense);
  set_attention_kernel(AttentionKernel::kAuto);
  EXPECT_EQ(choose(kRowAttentionRows + 1, true), AttentionKernel::kDense);  // a window: the products
  EXPECT_EQ(choose(1, true), cpu_isa() != Isa::kPortable ? AttentionKernel::kRows : AttentionKernel::kDense);
  test::KernelIsa portable(Isa::kPortable);  // the products are faster than portable loops
  EXPECT_EQ(choose(1, true), AttentionKernel::kDense);
}

}  // namespace
}  // namespace bakallm
