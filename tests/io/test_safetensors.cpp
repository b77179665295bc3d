// safetensors: round trip of every dtype, and rejection of broken files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "files.h"
#include "io/safetensors.h"
#include "paths.h"
#include "tensor_asserts.h"
#include "util/error.h"

namespace bakallm {
namespace {

std::string with_header(const std::string& json, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + json + data;
}

// The Error message for parsing BYTES, or "" when it parses.
std::string parse_error(const std::string& bytes) {
  try {
    parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, RoundTripEveryDtype) {
  test::TempDir dir;
  torch::manual_seed(0);
  auto f32 = torch::randn({3, 4});
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f32", f32},
      {"f16", f32.to(torch::kHalf)},
      {"bf16", f32.to(torch::kBFloat16)},
      {"i64", torch::arange(-5, 7, torch::kLong).view({3, 4})},
      {"i32", torch::arange(0, 10, torch::kInt)},
      {"scalar", torch::scalar_tensor(2.5f)},
      {"empty", torch::zeros({0, 3})},
      {"noncontiguous", f32.t()}};
  write_safetensors(dir / "t.safetensors", tensors, {{"format", "pt"}});
  auto back = read_safetensors(dir / "t.safetensors");
  EXPECT_EQ(back.metadata.at("format"), "pt");
  ASSERT_EQ(back.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const auto& b = back.tensors.at(name);
    EXPECT_EQ(b.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(b.sizes(), t.sizes()) << name;
    EXPECT_TRUE(torch::equal(b, t)) << name;
  }
  // Data starts 8-byte aligned.
  const auto bytes = test::read_file(dir / "t.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ((8 + n) % 8, 0u);
}

TEST(Safetensors, ReadsTheGoldenFile) {
  if (!std::filesystem::exists(test::golden("tiny.safetensors"))) GTEST_SKIP() << "needs ../shared/golden";
  auto st = read_safetensors(test::golden("tiny.safetensors"));
  EXPECT_EQ(st.tensors.size(), 81u);
  EXPECT_EQ(st.tensors.at("model.memory_injector.memory_tokens").sizes(), (std::vector<int64_t>{2, 4, 32}));
}

TEST(Safetensors, RejectsTruncatedFile) {
  test::TempDir dir;
  write_safetensors(dir / "t.safetensors", {{"w", torch::randn({16, 16})}});
  auto bytes = test::read_file(dir / "t.safetensors");
  for (size_t keep : {size_t(0), size_t(5), size_t(8), size_t(20), bytes.size() - 1}) {
    test::write_file(dir / "cut.safetensors", bytes.substr(0, keep));
    try {
      read_safetensors(dir / "cut.safetensors");
      FAIL() << "accepted a file cut to " << keep << " bytes";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut.safetensors"), std::string::npos) << e.what();
    }
  }
}

TEST(Safetensors, RejectsBadHeaders) {
  const std::string data(16, '\0');
  struct Case {
    std::string json, expect;
  };
  const std::vector<Case> cases = {
      {R"({"w":{"dtype":"F32","shape":[400],"data_offsets":[0,1600]}})", "truncated"},
      {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,18446744073709551615]}})", "span"},
      {R"({"w":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}})", "unsupported dtype"},
      {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})", "not valid JSON"},
      {R"([1,2,3])", "not a JSON object"},
      {R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", "negative"},
      {R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,4]}})", "end before begin"},
      {R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", "need 12"},
      {R"({"w":{"dtype":"F32","shape":[4]}})", "missing 'data_offsets'"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       "overlap"},
      {R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,16]}})", "overflow"},
  };
  for (const auto& c : cases) {
    const auto msg = parse_error(with_header(c.json, data));
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.json << " -> '" << msg << "'";
    EXPECT_EQ(msg.rfind("x.safetensors", 0), 0u) << msg;
  }
  // A header length beyond the file.
  std::string huge(8, '\xff');
  EXPECT_NE(parse_error(huge + "{}").find("implausible"), std::string::npos);
}

// The libFuzzer target's body, driven by a fixed-seed mutator so gcc builds run it too:
// random byte flips, truncations and header-length edits must give an Error or a valid parse.
TEST(Safetensors, SurvivesRandomCorruption) {
  test::TempDir dir;
  write_safetensors(dir / "t.safetensors",
                    {{"a", torch::randn({5, 3})}, {"b", torch::arange(7, torch::kLong)}, {"c", torch::randn({2})}});
  const auto base = test::read_file(dir / "t.safetensors");
  std::mt19937 rng(42);
  int errors = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bytes = base;
    const int edits = 1 + rng() % 4;
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 3) {
        case 0: bytes[rng() % bytes.size()] = static_cast<char>(rng()); break;
        case 1: bytes.resize(rng() % (bytes.size() + 1)); break;
        case 2: if (bytes.size() >= 8) bytes[rng() % 8] = static_cast<char>(rng()); break;
      }
      if (bytes.empty()) break;
    }
    if (!parse_error(bytes).empty()) ++errors;
  }
  EXPECT_GT(errors, 1000);  // most corruptions are caught, none crashed
}

}  // namespace
}  // namespace bakallm
