// Elementwise closeness with a message that names the tensor and the worst element.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <string>

namespace bakallm::test {

// |actual − expected| <= atol + rtol·|expected| everywhere, and equal shapes.
inline ::testing::AssertionResult all_close(const torch::Tensor& actual, const torch::Tensor& expected,
                                            double rtol = 1e-5, double atol = 1e-6) {
  if (actual.sizes() != expected.sizes()) {
    std::ostringstream s;
    s << "shape " << actual.sizes() << " vs expected " << expected.sizes();
    return ::testing::AssertionFailure() << s.str();
  }
  auto a = actual.detach().to(torch::kCPU, torch::kDouble);
  auto e = expected.detach().to(torch::kCPU, torch::kDouble);
  auto excess = (a - e).abs() - (atol + rtol * e.abs());
  if (excess.numel() == 0 || excess.max().item<double>() <= 0) return ::testing::AssertionSuccess();
  const auto worst = excess.flatten().argmax().item<int64_t>();
  std::ostringstream s;
  s << "worst element " << worst << ": " << a.flatten()[worst].item<double>() << " vs expected "
    << e.flatten()[worst].item<double>() << " (max abs diff " << (a - e).abs().max().item<double>() << ")";
  return ::testing::AssertionFailure() << s.str();
}

}  // namespace bakallm::test
