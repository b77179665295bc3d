// The EMA scan against its closed form, a numerical gradient check, and long
// sequences; the float32 loops as built for each instruction set this CPU runs.
#include <gtest/gtest.h>

#include "isas.h"
#include "ops/ema.h"
#include "tensor_asserts.h"

namespace bakallm {
namespace {

using test::all_close;

// y_t = Σ_{k<=t} alpha · q^(t−k) · u_k, computed directly in double.   -> [B, T, D]
torch::Tensor closed_form(const torch::Tensor& u, const torch::Tensor& alpha, const torch::Tensor& q) {
  const int64_t T = u.size(1);
  auto t = torch::arange(T, torch::kDouble);
  auto lag = (t.unsqueeze(1) - t.unsqueeze(0));                            // [T, T] t − k
  auto causal = lag.ge(0);
  auto powers = torch::pow(q.to(torch::kDouble).view({1, 1, -1}), lag.clamp_min(0).unsqueeze(-1));  // [T, T, D]
  auto kernel = powers * causal.unsqueeze(-1) * alpha.to(torch::kDouble);  // [T, T, D]
  return torch::einsum("tkd,bkd->btd", {kernel, u.to(torch::kDouble)});
}

TEST(Ema, MatchesClosedForm) {
  torch::manual_seed(0);
  auto u = torch::randn({3, 37, 8});
  auto alpha = torch::rand({8});
  auto q = (1 - alpha) * torch::rand({8});
  for (Isa isa : test::isas()) {
    const test::KernelIsa kernels(isa);
    EXPECT_TRUE(all_close(ema_scan(u, alpha, q), closed_form(u, alpha, q), 1e-5, 1e-6)) << isa_name(isa);
  }
}

TEST(Ema, GenericPathMatchesCpuKernel) {
  // bfloat16 and other dtypes take the tensor-op path; compare in float.
  torch::manual_seed(1);
  auto u = torch::randn({2, 20, 5});
  auto alpha = torch::rand({5});
  auto q = (1 - alpha) * torch::rand({5});
  auto fast = ema_scan(u, alpha, q);
  auto slow = ema_scan(u.to(torch::kBFloat16), alpha, q).to(torch::kFloat);
  EXPECT_TRUE(all_close(slow, fast, 2e-2, 2e-2));
}

// Central differences in double against the analytic backward, for u, alpha and q.
TEST(Ema, GradientCheck) {
  torch::manual_seed(2);
  auto u = torch::randn({2, 9, 4}, torch::kDouble).requires_grad_();
  auto alpha = torch::rand({4}, torch::kDouble).requires_grad_();
  auto q = ((1 - alpha.detach()) * torch::rand({4}, torch::kDouble)).requires_grad_();
  auto weights = torch::randn({2, 9, 4}, torch::kDouble);  // a random linear loss
  auto loss_of = [&](const torch::Tensor& uu, const torch::Tensor& aa, const torch::Tensor& qq) {
    return (ema_scan(uu, aa, qq) * weights).sum();
  };
  loss_of(u, alpha, q).backward();
  const double eps = 1e-6;
  for (auto* input : {&u, &alpha, &q}) {
    auto analytic = input->grad().clone();
    auto flat = input->detach().clone().flatten();
    auto numeric = torch::empty_like(flat);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      auto plus = flat.clone(), minus = flat.clone();
      plus[i] += eps;
      minus[i] -= eps;
      auto p = input->detach().clone().flatten().copy_(plus).view(input->sizes());
      auto m = input->detach().clone().flatten().copy_(minus).view(input->sizes());
      auto lp = input == &u ? loss_of(p, alpha.detach(), q.detach())
                            : input == &alpha ? loss_of(u.detach(), p, q.detach()) : loss_of(u.detach(), alpha.detach(), p);
      auto lm = input == &u ? loss_of(m, alpha.detach(), q.detach())
                            : input == &alpha ? loss_of(u.detach(), m, q.detach()) : loss_of(u.detach(), alpha.detach(), m);
      numeric[i] = (lp - lm).item<double>() / (2 * eps);
    }
    EXPECT_TRUE(all_close(analytic.flatten(), numeric, 1e-6, 1e-8));
  }
}

TEST(Ema, LongSequenceStaysAccurateInFloat) {
  // 20k steps: float32 scan against the double scan; the EMA forgets, so the
  // error must not grow with length.
  torch::manual_seed(3);
  auto u = torch::randn({1, 20000, 16});
  auto alpha = torch::sigmoid(torch::full({16}, 0.9999));
  auto q = (1 - alpha) * torch::sigmoid(torch::full({16}, 0.9899));
  auto d = ema_scan(u.to(torch::kDouble), alpha.to(torch::kDouble), q.to(torch::kDouble));
  for (Isa isa : test::isas()) {
    const test::KernelIsa kernels(isa);
    EXPECT_TRUE(all_close(ema_scan(u, alpha, q), d, 1e-5, 1e-6)) << isa_name(isa);
  }
}

TEST(Ema, LongSequenceGradientMatchesDouble) {
  torch::manual_seed(4);
  auto u = torch::randn({2, 5000, 8});
  auto alpha = torch::rand({8}).requires_grad_();
  auto q = ((1 - alpha.detach()) * torch::rand({8})).requires_grad_();
  auto ud = u.to(torch::kDouble);
  auto ad = alpha.detach().to(torch::kDouble).requires_grad_();
  auto qd = q.detach().to(torch::kDouble).requires_grad_();
  auto w = torch::randn({2, 5000, 8});
  (ema_scan(ud, ad, qd) * w.to(torch::kDouble)).sum().backward();
  for (Isa isa : test::isas()) {
    const test::KernelIsa kernels(isa);
    alpha.mutable_grad() = torch::Tensor();
    q.mutable_grad() = torch::Tensor();
    (ema_scan(u, alpha, q) * w).sum().backward();
    EXPECT_TRUE(all_close(alpha.grad(), ad.grad(), 1e-4, 1e-4)) << isa_name(isa);
    EXPECT_TRUE(all_close(q.grad(), qd.grad(), 1e-4, 1e-4)) << isa_name(isa);
  }
}

// A window continues the previous one's EMA from one value: scanning [a ; b]
// equals scanning b from y0 = the last row of scan(a), in value and in every
// gradient (u, alpha, q, and y0 back into a) -- by the CPU kernel, the
// generic path and the one-row step alike.
TEST(Ema, ContinuedFromAnInitialValueEqualsOneScan) {
  torch::manual_seed(5);
  for (int64_t rows_b : {1, 6}) {
    for (auto dtype : {torch::kDouble, torch::kBFloat16}) {
      auto a = torch::randn({2, 7, 4}, torch::kDouble).requires_grad_();
      auto b = torch::randn({2, rows_b, 4}, torch::kDouble).requires_grad_();
      auto alpha = torch::rand({4}, torch::kDouble).requires_grad_();
      auto q = ((1 - alpha.detach()) * torch::rand({4}, torch::kDouble)).requires_grad_();
      auto w = torch::randn({2, rows_b, 4}, torch::kDouble);
      auto as = [&](const torch::Tensor& t) { return dtype == torch::kDouble ? t : t.to(dtype); };
      auto whole = ema_scan(as(torch::cat({a, b}, 1)), alpha, q).narrow(1, 7, rows_b).to(torch::kDouble);
      (whole * w).sum().backward();
      auto grads = [&] {
        std::vector<torch::Tensor> g = {a.grad().clone(), b.grad().clone(), alpha.grad().clone(), q.grad().clone()};
        for (auto* t : {&a, &b, &alpha, &q}) t->mutable_grad().zero_();
        return g;
      };
      const auto expect = grads();
      auto y0 = ema_scan(as(a), alpha, q).select(1, 6);                    // [B, D]
      auto continued = ema_scan(as(b), alpha, q, y0).to(torch::kDouble);  // [B, rows_b, D]
      const double tol = dtype == torch::kDouble ? 1e-12 : 2e-2;
      EXPECT_TRUE(all_close(continued, whole, tol, tol)) << rows_b << " rows";
      (continued * w).sum().backward();
      const auto got = grads();
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_TRUE(all_close(got[i], expect[i], dtype == torch::kDouble ? 1e-10 : 5e-2, tol)) << "gradient " << i;
    }
  }
  EXPECT_THROW(ema_scan(torch::zeros({2, 3, 4}), torch::rand({4}), torch::rand({4}), torch::zeros({3, 4})),
               c10::Error);
}

// Decoding: one row at a time, no gradient wanted (the kernel's loop without
// an autograd node), from a fresh state and onward, equals one scan.
TEST(Ema, RowsWithoutGradientEqualOneScan) {
  torch::manual_seed(8);
  torch::NoGradGuard no_grad;
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    const auto u = torch::randn({2, 9, 20}, dtype), alpha = torch::rand({20}, dtype);
    const auto q = (1 - alpha) * torch::rand({20}, dtype);
    const auto whole = ema_scan(u, alpha, q);
    torch::Tensor y0;  // undefined: a fresh stream
    for (int64_t t = 0; t < u.size(1); ++t) {
      const auto row = ema_scan(u.narrow(1, t, 1), alpha, q, y0);  // [2, 1, 20]
      const double tol = dtype == torch::kFloat ? 1e-6 : 1e-12;
      EXPECT_TRUE(all_close(row, whole.narrow(1, t, 1), tol, tol)) << "row " << t << " " << dtype;
      y0 = row.select(1, 0);
    }
  }
}

TEST(Ema, EmptyTimeAxis) {
  auto y = ema_scan(torch::zeros({2, 0, 3}), torch::rand({3}), torch::rand({3}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 0, 3}));
}

}  // namespace
}  // namespace bakallm
