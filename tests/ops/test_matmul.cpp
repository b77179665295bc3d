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
// weights · V with V read as the transposed view Vᵀ (the attention's values):
// V's gradient equals the reference and comes back in V's own layout, rows
// contiguous (a transposed one had cost a strided copy downstream each time).
TEST(MatmulNT, TransposedViewOperandsGradientInItsOwnLayout) {
  torch::manual_seed(3);
  for (auto compute : {torch::kFloat, torch::kBFloat16}) {
    auto p = torch::randn({2, 70, 90}, torch::requires_grad()), v = torch::randn({2, 90, 80}, torch::requires_grad());
    auto w = torch::randn({2, 70, 80});
    const auto values = v * 1;  // not a leaf: its gradient is seen as it arrives (a leaf's is stored contiguous)
    torch::Tensor arrived;
    values.register_hook([&](const torch::Tensor& g) { arrived = g; });
    (matmul_nt(p, values.transpose(1, 2), compute) * w).sum().backward();
    EXPECT_TRUE(arrived.is_contiguous());
    const bool f32 = compute == torch::kFloat;
    const double rtol = f32 ? 1e-4 : 2e-2, atol = f32 ? 1e-4 : 0.5;
    EXPECT_TRUE(all_close(v.grad(), torch::matmul(p.detach().transpose(1, 2), w), rtol, atol));
    EXPECT_TRUE(all_close(p.grad(), torch::matmul(w, v.detach().transpose(1, 2)), rtol, atol));
  }
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

// Products that read one activation in turn share its bfloat16 cast (kept
// while the activation is unchanged): each result equals the product of a
// fresh cast, through another activation between, an in-place change and a
// view of the same storage; the gradients still reach the activation.
TEST(MatmulNT, Bfloat16ProductsOfOneActivationUseItsCurrentValues) {
  torch::manual_seed(6);
  const auto w1 = torch::randn({48, 64}), w2 = torch::randn({32, 64});
  auto fresh = [](const torch::Tensor& a, const torch::Tensor& w) {  // a rounded to bfloat16, given as float32
    return matmul_nt(a.detach().to(torch::kBFloat16).to(torch::kFloat).clone(), w, torch::kBFloat16);
  };
  auto x = torch::randn({3, 40, 64}), y = torch::randn({3, 40, 64});
  EXPECT_TRUE(torch::equal(matmul_nt(x, w1, torch::kBFloat16), fresh(x, w1)));
  EXPECT_TRUE(torch::equal(matmul_nt(y, w1, torch::kBFloat16), fresh(y, w1)));
  EXPECT_TRUE(torch::equal(matmul_nt(x, w2, torch::kBFloat16), fresh(x, w2)));
  x.mul_(-3.0);  // the same tensor, changed in place
  EXPECT_TRUE(torch::equal(matmul_nt(x, w2, torch::kBFloat16), fresh(x, w2)));
  const auto part = x.narrow(1, 5, 20);  // a view of the same storage
  EXPECT_TRUE(torch::equal(matmul_nt(part, w1, torch::kBFloat16), fresh(part, w1)));
  const auto z = torch::randn({3, 40, 64});  // a new tensor of the same shape
  EXPECT_TRUE(torch::equal(matmul_nt(z, w1, torch::kBFloat16), fresh(z, w1)));

  auto a = torch::randn({2, 30, 64}, torch::requires_grad());
  const auto g1 = torch::randn({2, 30, 48}), g2 = torch::randn({2, 30, 32});
  const auto y1 = matmul_nt(a, w1, torch::kBFloat16), y2 = matmul_nt(a, w2, torch::kBFloat16);
  EXPECT_TRUE(torch::equal(y1.detach(), fresh(a, w1)));
  EXPECT_TRUE(torch::equal(y2.detach(), fresh(a, w2)));
  ((y1 * g1).sum() + (y2 * g2).sum()).backward();
  const auto expected = matmul_nt(g1, w1.t(), torch::kBFloat16) + matmul_nt(g2, w2.t(), torch::kBFloat16);
  EXPECT_TRUE(all_close(a.grad(), expected, 1e-6, 1e-6));
}

// SumGradients: the products of one input send its gradient to one buffer,
// which the last of their backwards returns. Against the gradients written
// out in double: four products of x (two with one weight), x read by an
// elementwise op too (autograd adds that gradient to the sum), in float32
// and bfloat16 (the reference takes the operands and output gradients as
// the products do, rounded to it), and a second backward through the graph.
TEST(MatmulNT, ProductsOfOneInputSumItsGradientInOneBuffer) {
  torch::manual_seed(8);
  for (auto compute : {torch::kFloat, torch::kBFloat16}) {
    const std::vector<torch::Tensor> w{torch::randn({48, 64}), torch::randn({32, 64}), torch::randn({48, 64})};
    const std::vector<torch::Tensor> g{torch::randn({2, 30, 48}), torch::randn({2, 30, 32}), torch::randn({2, 30, 48}),
                                       torch::randn({2, 30, 48})};
    const int uses[4] = {0, 1, 2, 0};  // the weight each product reads
    const auto g_sin = torch::randn({2, 30, 64});
    auto x = torch::randn({2, 30, 64}, torch::requires_grad());
    std::vector<torch::Tensor> weights;
    for (const auto& wi : w) weights.push_back(wi.clone().requires_grad_());
    torch::Tensor loss = (x.sin() * g_sin).sum();
    {
      const SumGradients sum(x);
      for (int i = 0; i < 4; ++i) loss = loss + (matmul_nt(x, weights[uses[i]], compute) * g[i]).sum();
    }
    loss.backward({}, /*retain_graph=*/true);

    auto rounded = [&](const torch::Tensor& t) { return t.detach().to(compute).to(torch::kDouble); };
    const auto xr = rounded(x).reshape({-1, 64});
    auto dx = x.detach().to(torch::kDouble).cos() * g_sin.to(torch::kDouble);
    std::vector<torch::Tensor> dw(w.size(), torch::zeros({1}, torch::kDouble));
    for (int i = 0; i < 4; ++i) {
      dx = dx + torch::matmul(rounded(g[i]), rounded(w[uses[i]]));
      dw[uses[i]] = dw[uses[i]] + torch::matmul(rounded(g[i]).reshape({-1, g[i].size(-1)}).t(), xr);
    }
    EXPECT_TRUE(all_close(x.grad(), dx.to(torch::kFloat), 1e-5, 1e-5)) << compute;
    for (size_t i = 0; i < w.size(); ++i)
      EXPECT_TRUE(all_close(weights[i].grad(), dw[i].to(torch::kFloat), 1e-5, 1e-5)) << compute << i;
    const auto first = x.grad().clone();
    loss.backward();  // the same graph again: the sum starts over, and x's gradient doubles
    EXPECT_TRUE(all_close(x.grad(), 2 * first, 1e-6, 1e-6)) << compute;
  }
}

// Outside a SumGradients, or for another tensor than its input, products
// keep their own gradients (autograd adds them); where autograd records
// nothing the scope does nothing.
TEST(MatmulNT, SumGradientsOnlyJoinsProductsOfItsInput) {
  torch::manual_seed(9);
  const auto w = torch::randn({16, 32});
  auto x = torch::randn({5, 32}, torch::requires_grad()), other = torch::randn({5, 32}, torch::requires_grad());
  {
    const SumGradients sum(x);
    ((matmul_nt(x, w) + matmul_nt(other, w)).sum() + matmul_nt(other, w).sum()).backward();
  }
  const auto ones = torch::ones({5, 16});
  EXPECT_TRUE(all_close(x.grad(), torch::matmul(ones, w), 1e-5, 1e-5));
  EXPECT_TRUE(all_close(other.grad(), 2 * torch::matmul(ones, w), 1e-5, 1e-5));
  torch::NoGradGuard no_grad;
  const SumGradients none(x);
  EXPECT_TRUE(all_close(matmul_nt(x, w), torch::matmul(x, w.t()), 1e-5, 1e-5));
}

// SumGradients' one condition: every product of its input reaches the loss.
// Where one does not, the sum is never returned (x gets no gradient) and,
// when the graph is freed, a warning says so.
TEST(MatmulNT, SumGradientsWarnsWhereAProductNeverRanItsBackward) {
  struct Warnings : c10::WarningHandler {
    std::vector<std::string> messages;
    void process(const c10::SourceLocation&, const std::string& msg, const bool) override { messages.push_back(msg); }
  } warnings;
  const c10::Warning::WarningHandlerGuard guard(&warnings);
  torch::manual_seed(12);
  const auto w = torch::randn({16, 32});
  auto x = torch::randn({5, 32}, torch::requires_grad());
  {
    torch::Tensor used, unused;
    {
      const SumGradients sum(x);
      used = matmul_nt(x, w);
      unused = matmul_nt(x, w);
    }
    used.sum().backward();
    EXPECT_FALSE(x.grad().defined());
    EXPECT_TRUE(warnings.messages.empty());
  }  // the graph freed
  ASSERT_EQ(warnings.messages.size(), 1u);
  EXPECT_NE(warnings.messages[0].find("1 of 2 products of a shared input never ran their backward"), std::string::npos)
      << warnings.messages[0];
}

// matmul_nt_add: C += a · bᵀ against the product written out in double from
// the operands rounded as the product takes them, in float32 and bfloat16,
// with a a transposed view (the head's pᵀ), into a float32 C in the product
// and into a strided C (a product and add_).
TEST(MatmulNT, AddIntoAnExistingResult) {
  torch::manual_seed(5);
  for (auto compute : {torch::kFloat, torch::kBFloat16})
    for (bool strided : {false, true}) {
      SCOPED_TRACE(std::string(compute == torch::kFloat ? "float32" : "bfloat16") + (strided ? ", strided C" : ""));
      const auto a = torch::randn({64, 48}).t(), b = torch::randn({40, 64});  // a [48, 64] transposed view
      const auto c0 = torch::randn({48, 40});
      auto c = strided ? c0.t().contiguous().t() : c0.clone();
      matmul_nt_add(c, a, b, compute);
      auto rounded = [&](const torch::Tensor& t) { return t.to(compute).to(torch::kDouble); };
      const auto want = c0.to(torch::kDouble) + rounded(a).matmul(rounded(b).t());
      EXPECT_TRUE(all_close(c.to(torch::kDouble), want, 1e-5, 1e-5));
    }
  EXPECT_THROW(matmul_nt_add(torch::zeros({2, 3}), torch::randn({2, 4}, torch::requires_grad()), torch::randn({3, 4})),
               c10::Error);
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
