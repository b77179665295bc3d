// The fused shaping of queries and keys (ops/negated_norm.h) against the
// tensor expression it replaces, evaluated in float64: values and the
// gradients of x, the negator, the norm's weight and bias; angles shared by
// every row or per row; a gradient whose slices lie apart (a narrow of the
// attention's cat); no gradient wanted (decoding); x in bfloat16; the
// backward's loops as compiled for each instruction set this CPU runs.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <functional>

#include "isas.h"
#include "ops/negated_norm.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

struct NormCase {
  torch::Tensor x, c, g, b, cos, sin;
};

NormCase make(int64_t N, int64_t T, int64_t D, bool per_row) {
  NormCase k;
  k.x = torch::randn({N, T, D}) * 2 + 0.3;
  k.c = torch::tensor(1.7f);
  k.g = torch::randn({2 * D}) * 0.5 + 1;
  k.b = torch::randn({2 * D}) * 0.1;
  const auto angle = torch::rand(per_row ? std::vector<int64_t>{N, T, D / 2} : std::vector<int64_t>{T, D / 2}) * 6;
  k.cos = angle.cos();
  k.sin = angle.sin();
  return k;
}

// The fused op and the float64 expression on K's operands, each output
// passed through NEXT where given (the model's next op, as the attention's
// cat): the same values and gradients of x, the negator, g and b.
void expect_as_float64(const NormCase& k, const std::string& what,
                       const std::function<torch::Tensor(const torch::Tensor&)>& next = {}) {
  auto leaf = [](const torch::Tensor& t, torch::ScalarType dtype) { return t.to(dtype).detach().requires_grad_(true); };
  const auto x = leaf(k.x, torch::kFloat), c = leaf(k.c, torch::kFloat), g = leaf(k.g, torch::kFloat),
             b = leaf(k.b, torch::kFloat);
  const auto xd = leaf(k.x, torch::kDouble), cd = leaf(k.c, torch::kDouble), gd = leaf(k.g, torch::kDouble),
             bd = leaf(k.b, torch::kDouble);
  auto y = negated_norm_rotary(x, c, g, b, 1e-5, k.cos, k.sin);
  auto yd = negated_norm_rotary_unfused(xd, cd, gd, bd, 1e-5, k.cos.to(torch::kDouble), k.sin.to(torch::kDouble));
  if (next) {
    y = next(y);
    yd = next(yd);
  }
  EXPECT_TRUE(test::all_close(y, yd, 1e-5, 1e-5)) << what;
  const auto w = torch::randn(y.sizes());  // an arbitrary loss: Σ w·y
  (y * w).sum().backward();
  (yd * w.to(torch::kDouble)).sum().backward();
  EXPECT_TRUE(test::all_close(x.grad(), xd.grad(), 1e-5, 1e-5)) << "dx, " << what;
  EXPECT_TRUE(test::all_close(c.grad(), cd.grad(), 1e-5, 1e-4)) << "dc, " << what;
  EXPECT_TRUE(test::all_close(g.grad(), gd.grad(), 1e-5, 1e-4)) << "dg, " << what;
  EXPECT_TRUE(test::all_close(b.grad(), bd.grad(), 1e-5, 1e-4)) << "db, " << what;
  EXPECT_EQ(c.grad().sizes(), c.sizes());
  if (next) return;
  torch::NoGradGuard no_grad;  // decoding: the forward loop alone
  EXPECT_TRUE(test::all_close(negated_norm_rotary(x, c, g, b, 1e-5, k.cos, k.sin), yd, 1e-5, 1e-5)) << what;
}

TEST(NegatedNorm, EqualsTheExpressionWithItsGradients) {
  torch::manual_seed(31);
  at::set_num_threads(2);
  for (Isa isa : test::isas())
    for (int64_t D : {24, 22})  // 22: the kernel's sums take 8 values a step, then the last few
      for (bool per_row : {false, true}) {
        SCOPED_TRACE("D " + std::to_string(D) + ", instruction set " + std::to_string(static_cast<int>(isa)));
        const test::KernelIsa kernels(isa);
        // 450 rows: split between threads, each thread's rows in blocks whose
        // sums gather in float32 before double (and a last, shorter block)
        expect_as_float64(make(3, 150, D, per_row), "per row " + std::to_string(per_row));
      }
}

// The keys joined along time after the past's (the attention's cat): the
// gradient arrives as a narrow of the cat's, its slices apart, which the
// backward reads in place.
TEST(NegatedNorm, GradientWithItsSlicesApart) {
  torch::manual_seed(37);
  at::set_num_threads(2);
  const auto past = torch::randn({3, 40, 48});
  for (Isa isa : test::isas()) {
    SCOPED_TRACE("instruction set " + std::to_string(static_cast<int>(isa)));
    const test::KernelIsa kernels(isa);
    expect_as_float64(make(3, 150, 24, false), "after the past",
                      [&](const torch::Tensor& y) { return torch::cat({past.to(y.scalar_type()), y}, 1); });
  }
}

// x in bfloat16 (q's or k's product output when the products compute in
// bfloat16): the output float32, as the float64 expression of the same x
// gives it; dx back in bfloat16, within one rounding; the parameters'
// gradients as float64's.
TEST(NegatedNorm, TakesXInBfloat16) {
  torch::manual_seed(32);
  at::set_num_threads(2);
  for (Isa isa : test::isas()) {
    SCOPED_TRACE("instruction set " + std::to_string(static_cast<int>(isa)));
    const test::KernelIsa kernels(isa);
    const auto k = make(3, 150, 24, false);
    auto leaf = [](const torch::Tensor& t, torch::ScalarType dtype) {
      return t.to(dtype).detach().requires_grad_(true);
    };
    const auto x16 = k.x.to(torch::kBFloat16);
    const auto x = leaf(x16, torch::kBFloat16), c = leaf(k.c, torch::kFloat), g = leaf(k.g, torch::kFloat),
               b = leaf(k.b, torch::kFloat);
    const auto xd = leaf(x16, torch::kDouble), cd = leaf(k.c, torch::kDouble), gd = leaf(k.g, torch::kDouble),
               bd = leaf(k.b, torch::kDouble);
    const auto y = negated_norm_rotary(x, c, g, b, 1e-5, k.cos, k.sin);
    const auto yd =
        negated_norm_rotary_unfused(xd, cd, gd, bd, 1e-5, k.cos.to(torch::kDouble), k.sin.to(torch::kDouble));
    EXPECT_EQ(y.scalar_type(), torch::kFloat);
    EXPECT_TRUE(test::all_close(y, yd, 1e-5, 1e-5));
    const auto w = torch::randn(y.sizes());
    (y * w).sum().backward();
    (yd * w.to(torch::kDouble)).sum().backward();
    EXPECT_EQ(x.grad().scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(test::all_close(x.grad(), xd.grad(), 1.0 / 256, 1e-5));  // one bfloat16 rounding
    EXPECT_TRUE(test::all_close(c.grad(), cd.grad(), 1e-5, 1e-4));
    EXPECT_TRUE(test::all_close(g.grad(), gd.grad(), 1e-5, 1e-4));
    EXPECT_TRUE(test::all_close(b.grad(), bd.grad(), 1e-5, 1e-4));
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(test::all_close(negated_norm_rotary(x, c, g, b, 1e-5, k.cos, k.sin), yd, 1e-5, 1e-5));
  }
}

TEST(NegatedNorm, OtherDtypesRunTheExpression) {
  const auto k = make(1, 3, 8, false);
  const auto xd = k.x.to(torch::kDouble), cd = k.c.to(torch::kDouble), gd = k.g.to(torch::kDouble),
             bd = k.b.to(torch::kDouble), cos = k.cos.to(torch::kDouble), sin = k.sin.to(torch::kDouble);
  EXPECT_TRUE(torch::equal(negated_norm_rotary(xd, cd, gd, bd, 1e-5, cos, sin),
                           negated_norm_rotary_unfused(xd, cd, gd, bd, 1e-5, cos, sin)));
  EXPECT_THROW(negated_norm_rotary(k.x, k.c, k.g.narrow(0, 0, 8), k.b, 1e-5, k.cos, k.sin), c10::Error);
}

}  // namespace
}  // namespace bakallm
