#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "paths.h"
#include "util/error.h"

namespace bakallm {
namespace {

std::string error_of(const nlohmann::json& j) {
  try {
    config_from_json(j, "c.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

nlohmann::json small() {
  return {{"hidden_dim", 32}, {"num_layers", 2}, {"num_memory_tokens", 4}, {"window_size", 8}, {"vocab_size", 64}};
}

TEST(Config, ReadsTheGoldenConfig) {
  auto c = load_config(test::golden("tiny.config.json"));
  EXPECT_EQ(c.hidden_dim, 32);
  EXPECT_EQ(c.intermediate_dim, 48);
  EXPECT_EQ(c.detach_every, 2);
  EXPECT_EQ(c.attn_dropout, 0.0);
  EXPECT_EQ(c.mega_cache, MegaCache::kPreviousLayerOutput);
  EXPECT_EQ(c.extended_window(), 8 + 2 * 4 + 2);
}

TEST(Config, IntermediateDefaultsToFourD) { EXPECT_EQ(config_from_json(small(), "c").intermediate_dim, 128); }

TEST(Config, RoundTripsThroughJson) {
  auto j = small();
  j["mega_cache"] = "previous_layer_input";
  j["attn_dropout"] = 0.25;
  auto c = config_from_json(j, "c");
  auto c2 = config_from_json(config_to_json(c), "c2");
  EXPECT_EQ(config_to_json(c), config_to_json(c2));
  EXPECT_EQ(c2.mega_cache, MegaCache::kPreviousLayerInput);
}

TEST(Config, RejectsUnknownAndImpossible) {
  auto with = [](const char* k, nlohmann::json v) {
    auto j = small();
    j[k] = v;
    return j;
  };
  EXPECT_NE(error_of(with("hiden_dim", 3)).find("unknown field 'hiden_dim'"), std::string::npos);
  EXPECT_NE(error_of(with("hidden_dim", 31)).find("hidden_dim"), std::string::npos);
  EXPECT_NE(error_of(with("hidden_dim", -2)).find("hidden_dim"), std::string::npos);
  EXPECT_NE(error_of(with("num_layers", 0)).find("num_layers"), std::string::npos);
  EXPECT_NE(error_of(with("window_size", 2.5)).find("'window_size' must be an integer"), std::string::npos);
  EXPECT_NE(error_of(with("attn_dropout", 1.0)).find("attn_dropout"), std::string::npos);
  EXPECT_NE(error_of(with("detach_every", -1)).find("detach_every"), std::string::npos);
  EXPECT_NE(error_of(with("negator", 1)).find("'negator' must be true or false"), std::string::npos);
  EXPECT_NE(error_of(with("ema_input", "keys")).find("'ema_input' must be one of values, queries_keys, none"), std::string::npos);
  EXPECT_NE(error_of(with("mega_cache", "both")).find("mega_cache"), std::string::npos);
  EXPECT_NE(error_of(with("vocab_size", "64")).find("vocab_size"), std::string::npos);
  auto j = small();
  j.erase("vocab_size");
  EXPECT_NE(error_of(j).find("missing field 'vocab_size'"), std::string::npos);
  EXPECT_EQ(error_of(small()), "");
  EXPECT_EQ(error_of(with("hiden_dim", 3)).rfind("c.json: ", 0), 0u);
}

TEST(Config, Presets) {
  auto tiny = preset("tiny");
  EXPECT_EQ(tiny.hidden_dim, 320);
  EXPECT_EQ(tiny.num_layers, 8);
  EXPECT_EQ(tiny.intermediate_dim, 1280);
  EXPECT_EQ(tiny.num_memory_tokens, 32);
  EXPECT_EQ(tiny.window_size, 512);
  EXPECT_EQ(tiny.vocab_size, 32000);
  auto base = preset("base");
  EXPECT_EQ(base.hidden_dim, 768);
  EXPECT_EQ(base.num_layers, 12);
  EXPECT_EQ(base.intermediate_dim, 2048);
  EXPECT_THROW(preset("huge"), Error);
}

TEST(Config, BadFiles) {
  test::TempDir dir;
  EXPECT_THROW(load_config(dir / "missing.json"), Error);
  std::ofstream(dir / "bad.json") << "{ not json";
  try {
    load_config(dir / "bad.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json: invalid JSON"), std::string::npos);
  }
}

}  // namespace
}  // namespace bakallm
