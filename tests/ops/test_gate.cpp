// The fused gates (ops/gate.h) against the expressions they replace, evaluated
// in float64, for each instruction set's loops: values and every input's
// gradient, with and without a base;
// rows split between threads, a length that is no multiple of 16 (the vector
// loop's tail), operands not contiguous, a gradient whose slices lie apart
// (a narrow of a cat's), no gradient wanted (decoding),
// bfloat16 operands (relu_gate; the sigmoid gate's z, or x and z onto a
// float32 base), and what falls back to the expressions
// (broadcast shapes, other dtypes).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <functional>

#include "isas.h"
#include "ops/gate.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

torch::Tensor leaf(const torch::Tensor& t, torch::ScalarType dtype) { return t.to(dtype).detach().requires_grad_(true); }

// Σ w·y backward for the fused op (float32) and the expression (float64);
// the values and each input's gradient agree.
void expect_same(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& fused,
                 const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& reference,
                 const std::vector<torch::Tensor>& inputs, const std::string& what) {
  std::vector<torch::Tensor> f, d;
  for (const auto& t : inputs) {
    f.push_back(leaf(t, torch::kFloat));
    d.push_back(leaf(t, torch::kDouble));
  }
  const auto y = fused(f), yd = reference(d);
  EXPECT_TRUE(test::all_close(y, yd, 1e-5, 1e-6)) << what;
  const auto w = torch::randn(y.sizes());
  (y * w).sum().backward();
  (yd * w.to(torch::kDouble)).sum().backward();
  for (size_t i = 0; i < f.size(); ++i) EXPECT_TRUE(test::all_close(f[i].grad(), d[i].grad(), 1e-5, 1e-6)) << what << ", input " << i;
  torch::NoGradGuard no_grad;  // decoding: the forward loop alone
  EXPECT_TRUE(test::all_close(fused(f), yd, 1e-5, 1e-6)) << what << ", no gradient";
}

// F(sizes) for each instruction set's loops this CPU runs (AVX2: float32
// operands; bfloat16 ones run the portable loop) and each shape: rows split
// between threads, one short row (the vector loop's tail).
void each_isa_and_shape(uint64_t seed, const std::function<void(const std::vector<int64_t>&)>& f) {
  torch::manual_seed(seed);
  at::set_num_threads(2);
  for (Isa isa : test::isas()) {
    test::KernelIsa loops(isa);
    SCOPED_TRACE(isa_name(isa));
    for (const auto& sizes : {std::vector<int64_t>{3, 70, 401}, std::vector<int64_t>{1, 1, 37}}) f(sizes);
  }
}

TEST(Gate, SigmoidGateEqualsTheExpressionWithItsGradients) {
  each_isa_and_shape(5, [](const std::vector<int64_t>& sizes) {
    const auto x = torch::randn(sizes), z = torch::randn(sizes) * 4, base = torch::randn(sizes);
    expect_same([](const auto& t) { return sigmoid_gate(t[0], t[1], t[2]); },
                [](const auto& t) { return t[2] + t[0] * torch::sigmoid(t[1]); }, {x, z, base}, "with a base");
    expect_same([](const auto& t) { return sigmoid_gate(t[0], t[1]); },
                [](const auto& t) { return t[0] * torch::sigmoid(t[1]); }, {x, z}, "without");
  });
}

TEST(Gate, ReluGateEqualsTheExpressionWithItsGradients) {
  each_isa_and_shape(6, [](const std::vector<int64_t>& sizes) {
    const auto u = torch::randn(sizes), g = torch::randn(sizes);
    expect_same([](const auto& t) { return relu_gate(t[0], t[1]); },
                [](const auto& t) { return t[0] * torch::relu(t[1]); }, {u, g}, "relu");
  });
}

// bfloat16 operands (the MLP's inner activations when the products compute
// in bfloat16) run the loop in float32 and round each result once, as
// libtorch's bfloat16 ops do: the same bits as the expression in bfloat16,
// forward and both gradients (products of bfloat16 values often fall on a
// rounding tie: ties to even are checked too).
TEST(Gate, ReluGateInBfloat16EqualsTheExpressionInBfloat16) {
  torch::manual_seed(8);
  at::set_num_threads(2);
  for (auto sizes : {std::vector<int64_t>{3, 70, 401}, std::vector<int64_t>{1, 1, 37}}) {
    const auto u = torch::randn(sizes).to(torch::kBFloat16), g = torch::randn(sizes).to(torch::kBFloat16);
    const auto dy = torch::randn(sizes).to(torch::kBFloat16);
    std::vector<torch::Tensor> grads;
    for (bool fused : {true, false}) {
      const auto ul = u.detach().requires_grad_(true), gl = g.detach().requires_grad_(true);
      const auto y = fused ? relu_gate(ul, gl) : relu_gate_unfused(ul, gl);
      EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
      y.backward(dy);
      for (const auto& t : {y.detach(), ul.grad(), gl.grad()}) grads.push_back(t);
    }
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(torch::equal(grads[i], grads[i + 3])) << "output " << i;
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(relu_gate(u, g), grads[3]));
  }
}

// A gate's z in bfloat16 (a product's output that only feeds the gate),
// and x too where X16 (the MLP's output, model/mlp.h's gated), onto a
// float32 base (the residual stream): y in float32 as the float64 expression
// of the same values gives it, the base's gradient as is, dx in x's dtype,
// dz in bfloat16, each bfloat16 result rounded once; without a base, y in
// x's dtype.
void expect_bfloat16_gate(const std::vector<int64_t>& sizes, bool x16) {
  const auto z16 = (torch::randn(sizes) * 4).to(torch::kBFloat16);
  const auto x0 = x16 ? torch::randn(sizes).to(torch::kBFloat16) : torch::randn(sizes);
  const auto x = x0.detach().requires_grad_(true), z = z16.detach().requires_grad_(true);
  const auto base = leaf(torch::randn(sizes), torch::kFloat);
  const auto xd = leaf(x0, torch::kDouble), zd = leaf(z16, torch::kDouble), bd = leaf(base.detach(), torch::kDouble);
  const auto y = sigmoid_gate(x, z, base), yd = bd + xd * torch::sigmoid(zd);
  EXPECT_EQ(y.scalar_type(), torch::kFloat);
  EXPECT_TRUE(test::all_close(y, yd, 1e-5, 1e-6));
  const auto w = torch::randn(sizes);
  (y * w).sum().backward();
  (yd * w.to(torch::kDouble)).sum().backward();
  const double one_rounding = 1.0 / 256;
  EXPECT_TRUE(test::all_close(base.grad(), bd.grad(), 1e-6, 1e-7));
  EXPECT_EQ(x.grad().scalar_type(), x0.scalar_type());
  EXPECT_TRUE(test::all_close(x.grad(), xd.grad(), x16 ? one_rounding : 1e-5, 1e-6));
  EXPECT_EQ(z.grad().scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(test::all_close(z.grad(), zd.grad(), one_rounding, 1e-6));
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(test::all_close(sigmoid_gate(x0, z16, base.detach()), yd, 1e-5, 1e-6));
  const auto alone = sigmoid_gate(x0, z16);
  EXPECT_EQ(alone.scalar_type(), x0.scalar_type());
  EXPECT_TRUE(test::all_close(alone, xd * torch::sigmoid(zd), x16 ? one_rounding : 1e-5, 1e-6));
}

TEST(Gate, SigmoidGateTakesItsZInBfloat16) {
  each_isa_and_shape(10, [](const std::vector<int64_t>& sizes) { expect_bfloat16_gate(sizes, false); });
}

TEST(Gate, SigmoidGateTakesXAndZInBfloat16OntoAFloat32Base) {
  each_isa_and_shape(11, [](const std::vector<int64_t>& sizes) { expect_bfloat16_gate(sizes, true); });
}

TEST(Gate, OperandsNotContiguous) {
  torch::manual_seed(7);
  const auto x = torch::randn({40, 24}).t(), z = torch::randn({24, 40}), base = torch::randn({40, 24}).t();
  expect_same([](const auto& t) { return sigmoid_gate(t[0].t(), t[1], t[2].t()); },
              [](const auto& t) { return t[2].t() + t[0].t() * torch::sigmoid(t[1]); }, {x.t(), z, base.t()},
              "transposed");
  expect_same([](const auto& t) { return relu_gate(t[0].t(), t[1]); },
              [](const auto& t) { return t[0].t() * torch::relu(t[1]); }, {x.t(), z}, "transposed relu");
}

// The gate's output joined along time with another tensor (the past keys'
// and values' gates feed the attention's cat): its gradient arrives as a
// narrow of the cat's, slices apart, which the backward reads in place.
TEST(Gate, GradientWithItsSlicesApart) {
  each_isa_and_shape(13, [](const std::vector<int64_t>& sizes) {
    const auto x = torch::randn(sizes), z = torch::randn(sizes) * 4, base = torch::randn(sizes);
    const auto more = torch::randn(sizes);
    expect_same([](const auto& t) { return torch::cat({t[3], sigmoid_gate(t[0], t[1], t[2])}, 1); },
                [](const auto& t) { return torch::cat({t[3], t[2] + t[0] * torch::sigmoid(t[1])}, 1); },
                {x, z, base, more}, "sigmoid gate, based");
    expect_same([](const auto& t) { return torch::cat({sigmoid_gate(t[0], t[1]), t[2]}, 1); },
                [](const auto& t) { return torch::cat({t[0] * torch::sigmoid(t[1]), t[2]}, 1); }, {x, z, more},
                "sigmoid gate");
    expect_same([](const auto& t) { return torch::cat({relu_gate(t[0], t[1]), t[2]}, 1); },
                [](const auto& t) { return torch::cat({t[0] * torch::relu(t[1]), t[2]}, 1); }, {x, z, more},
                "relu gate");
  });
}

TEST(Gate, BroadcastShapesAndOtherDtypesRunTheExpression) {
  const auto x = torch::randn({2, 3, 8}), z = torch::randn({8}), base = torch::randn({2, 3, 8});
  EXPECT_TRUE(torch::equal(sigmoid_gate(x, z, base), sigmoid_gate_unfused(x, z, base)));
  const auto xd = x.to(torch::kDouble), zd = torch::randn({2, 3, 8}, torch::kDouble);
  EXPECT_TRUE(torch::equal(sigmoid_gate(xd, zd), sigmoid_gate_unfused(xd, zd)));
  EXPECT_TRUE(torch::equal(relu_gate(xd, zd), relu_gate_unfused(xd, zd)));
}

}  // namespace
}  // namespace bakallm
