// scripts/trace_ops.py, which reads `bench --profile`'s Chrome traces: self
// times of nested spans written out by hand, the mean of several traces, a
// file that is not a trace, and a real trace of a product's forward and
// backward, whose oneDNN products it must count as products.
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

std::string script() { return "python3 " + std::string(BAKALLM_SOURCE_DIR) + "/scripts/trace_ops.py "; }

nlohmann::json trace_ops(const std::string& traces) {
  const auto r = test::run_command(script() + "--json " + traces);
  EXPECT_EQ(r.status, 0) << r.out;
  return nlohmann::json::parse(r.out);
}

nlohmann::json span(const std::string& name, int ts, int dur, int tid) {
  return {{"name", name}, {"ph", "X"}, {"ts", ts}, {"dur", dur}, {"tid", tid}, {"pid", "CPU"}};
}

TEST(TraceOps, SelfTimesOfNestedSpans) {
  // Thread 1: a [0, 100) holds mm [10, 40) and b [50, 90), which holds c [60, 70);
  // then, after a gap, d [120, 150) holds onednn_product [125, 145).
  // Thread 2 (a backward's): mm [0, 20). In microseconds.
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

TEST(TraceOps, SeveralTracesGiveTheirMean) {
  test::TempDir dir;
  std::ofstream(dir / "1.json") << nlohmann::json::array({span("a", 0, 100, 1), span("aten::mm", 10, 60, 1)});
  std::ofstream(dir / "2.json") << nlohmann::json{
      {"traceEvents", nlohmann::json::array({span("a", 0, 50, 7), span("aten::mm", 0, 20, 7), span("b", 60, 40, 7)})}};
  const auto s = trace_ops(dir / "1.json " + dir / "2.json");
  EXPECT_NEAR(s["step_s"].get<double>() * 1e6, (100 + 100) / 2.0, 1e-6);
  EXPECT_NEAR(s["products_s"].get<double>() * 1e6, (60 + 20) / 2.0, 1e-6);
  EXPECT_NEAR(s["ops"]["a"]["self_s"].get<double>() * 1e6, (40 + 30) / 2.0, 1e-6);
  EXPECT_NEAR(s["ops"]["b"]["calls"].get<double>(), 0.5, 1e-9);
  EXPECT_NEAR(s["untraced_s"].get<double>() * 1e6, 10 / 2.0, 1e-6);  // [50, 60) of the second
}

TEST(TraceOps, RefusesWhatIsNotATrace) {
  test::TempDir dir;
  std::ofstream(dir / "bad.json") << "{ not json";
  const auto r = test::run_command(script() + dir / "bad.json");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("bad.json: not a Chrome trace"), std::string::npos) << r.out;
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
