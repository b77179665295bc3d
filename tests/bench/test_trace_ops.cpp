// scripts/trace_ops.py, which reads `bench --profile`'s Chrome traces: self
// times of nested spans written out by hand, and a real trace of a product's
// forward and backward, whose oneDNN products it must count as products.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "ops/matmul.h"
#include "ops/onednn.h"
#include "paths.h"
#include "run_cli.h"

namespace bakallm {
namespace {

nlohmann::json trace_ops(const std::string& trace) {
  const auto r = test::run_command("python3 " + std::string(BAKALLM_SOURCE_DIR) + "/scripts/trace_ops.py --json " + trace);
  EXPECT_EQ(r.status, 0) << r.out;
  return nlohmann::json::parse(r.out);
}

TEST(TraceOps, SelfTimesOfNestedSpans) {
  // Thread 1: a [0, 100) holds mm [10, 40) and b [50, 90), which holds c [60, 70);
  // then, after a gap, d [120, 150) holds onednn_product [125, 145).
  // Thread 2 (a backward's): mm [0, 20). In microseconds.
  auto span = [](const std::string& name, int ts, int dur, int tid) {
    return nlohmann::json{{"name", name}, {"ph", "X"}, {"ts", ts}, {"dur", dur}, {"tid", tid}, {"pid", "CPU"}};
  };
  test::TempDir dir;
  std::ofstream(dir / "t.json") << nlohmann::json::array(
      {span("b", 50, 40, 1), span("a", 0, 100, 1), span("aten::mm", 10, 30, 1), span("c", 60, 10, 1),
       span("d", 120, 30, 1), span("bakallm::onednn_product", 125, 20, 1), span("aten::mm", 0, 20, 2)});
  const auto s = trace_ops(dir / "t.json");
  const auto self = [&](const char* name) { return s["ops"][name]["self_s"].get<double>() * 1e6; };
  EXPECT_NEAR(self("a"), 100 - 30 - 40, 1e-6);
  EXPECT_NEAR(self("b"), 40 - 10, 1e-6);
  EXPECT_NEAR(self("c"), 10, 1e-6);
  EXPECT_NEAR(self("d"), 30 - 20, 1e-6);
  EXPECT_NEAR(self("aten::mm"), 30 + 20, 1e-6);
  EXPECT_EQ(s["ops"]["aten::mm"]["calls"], 2);
  EXPECT_NEAR(s["step_s"].get<double>() * 1e6, 150, 1e-6);
  EXPECT_NEAR(s["products_s"].get<double>() * 1e6, 30 + 20 + 20, 1e-6);
  EXPECT_NEAR(s["rest_s"].get<double>() * 1e6, 150 - 70, 1e-6);
  EXPECT_NEAR(s["untraced_s"].get<double>() * 1e6, 20, 1e-6);  // [100, 120) on thread 1
}

TEST(TraceOps, CountsTheProductsOfATracedBackward) {
  torch::manual_seed(0);
  auto a = torch::randn({64, 128}, torch::requires_grad()), b = torch::randn({96, 128}, torch::requires_grad());
  test::TempDir dir;
  {
    torch::autograd::profiler::RecordProfile trace(dir / "step.json");
    matmul_nt(a, b).square().sum().backward();  // y = a · bᵀ, then da = dy · b and db = dyᵀ · a
  }
  const auto s = trace_ops(dir / "step.json");
  const char* product = onednn::available() ? "bakallm::onednn_product" : "aten::mm";
  EXPECT_EQ(s["ops"][product]["calls"], 3);
  EXPECT_GT(s["products_s"].get<double>(), 0.0);
  EXPECT_LT(s["products_s"].get<double>(), s["step_s"].get<double>());
}

}  // namespace
}  // namespace bakallm
