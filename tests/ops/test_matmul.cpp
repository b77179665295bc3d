// matmul_nt: the oneDNN path against torch::matmul, values and gradients.
#include <gtest/gtest.h>

#include "model/linear.h"
#include "ops/matmul.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

using test::all_close;

void check(std::vector<int64_t> a_shape, std::vector<int64_t> b_shape) {
  torch::manual_seed(0);
  auto a = torch::randn(a_shape, torch::requires_grad());
  auto b = torch::randn(b_shape, torch::requires_grad());
  auto a2 = a.detach().clone().requires_grad_();
  auto b2 = b.detach().clone().requires_grad_();
  auto y = matmul_nt(a, b);
  auto ref = torch::matmul(a2, b2.transpose(-1, -2));
  EXPECT_TRUE(all_close(y, ref, 1e-4, 1e-4));
  auto w = torch::randn(ref.sizes());
  (y * w).sum().backward();
  (ref * w).sum().backward();
  EXPECT_TRUE(all_close(a.grad(), a2.grad(), 1e-4, 1e-4));
  EXPECT_TRUE(all_close(b.grad(), b2.grad(), 1e-4, 1e-4));
}

TEST(MatmulNT, TwoD) { check({130, 96}, {80, 96}); }
TEST(MatmulNT, BatchedWithSharedWeight) { check({3, 70, 96}, {80, 96}); }
TEST(MatmulNT, BatchedBoth) { check({3, 70, 96}, {3, 90, 96}); }
TEST(MatmulNT, TransposedViewOperand) {
  torch::manual_seed(1);
  auto p = torch::randn({2, 70, 90});
  auto v = torch::randn({2, 90, 80});
  EXPECT_TRUE(all_close(matmul_nt(p, v.transpose(1, 2)), torch::matmul(p, v), 1e-4, 1e-4));
}
TEST(MatmulNT, Bfloat16ComputeStaysClose) {
  torch::manual_seed(2);
  auto a = torch::randn({64, 128}), b = torch::randn({96, 128});
  auto y = matmul_nt(a, b, torch::kBFloat16);
  EXPECT_EQ(y.scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(y, torch::matmul(a, b.t()), 2e-2, 0.5));
}
TEST(MatmulNT, Bfloat16GradientsStayClose) {
  torch::manual_seed(4);
  auto a = torch::randn({2, 40, 64}, torch::requires_grad()), b = torch::randn({48, 64}, torch::requires_grad());
  auto w = torch::randn({2, 40, 48});
  (matmul_nt(a, b, torch::kBFloat16) * w).sum().backward();
  EXPECT_EQ(a.grad().scalar_type(), torch::kFloat);
  EXPECT_TRUE(all_close(a.grad(), torch::matmul(w, b.detach()), 2e-2, 0.5));
  EXPECT_TRUE(all_close(b.grad(), torch::matmul(w.reshape({-1, 48}).t(), a.detach().reshape({-1, 64})), 2e-2, 1.0));
}

TEST(MatmulNT, MeasuredFlopsArePlausible) {
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    const double flops = measure_matmul_flops(dtype, 128);
    EXPECT_GT(flops, 1e8);   // any CPU of the last 20 years
    EXPECT_LT(flops, 1e15);  // and no CPU at all
  }
}

TEST(Linear, InitAndForward) {
  torch::manual_seed(3);
  Linear fc(100, 70, /*bias=*/true);
  EXPECT_LE(fc->weight.abs().max().item<double>(), 0.1);
  EXPECT_LE(fc->bias.abs().max().item<double>(), 0.1);
  auto x = torch::randn({4, 5, 100});
  EXPECT_TRUE(all_close(fc(x), torch::matmul(x, fc->weight.t()) + fc->bias, 1e-4, 1e-5));
  auto names = fc->named_parameters().keys();
  EXPECT_EQ(names, (std::vector<std::string>{"weight", "bias"}));
}

}  // namespace
}  // namespace bakallm
