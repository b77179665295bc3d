// Every design switch of docs/VARIANTS.md: the parameters it adds or removes,
// shapes, gradients against central differences (double precision), and the
// incremental decoder against the batched forward -- all through the one
// block code.
#include <gtest/gtest.h>

#include <set>

#include <nlohmann/json.hpp>

#include "infer/decoder.h"
#include "model/baka_lm.h"
#include "small_config.h"
#include "tensor_asserts.h"
#include "util/error.h"

namespace bakallm {
namespace {

struct Variant {
  const char* name;
  nlohmann::json overrides;
  std::vector<std::string> absent;  // parameter-name fragments the switch removes
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"prototype", nlohmann::json::object(), {}},
      {"ema_into_qk", {{"ema_input", "queries_keys"}}, {}},
      {"no_ema", {{"ema_input", "none"}}, {"mega.dampeners", "norm_mega", "mega_gate"}},
      {"no_negator", {{"negator", false}}, {"negator"}},
      {"no_qk_norm", {{"qk_norm", false}}, {"q_norm", "k_norm"}},
      {"no_sep", {{"sep_tokens", false}}, {"sep_tokens"}},
      {"no_xl_cache", {{"xl_cache", false}}, {}},
      {"no_past_gates", {{"past_kv_gates", false}}, {"past_k_gate", "past_v_gate"}},
      {"mlp_self_gate", {{"mlp_gate", "self"}}, {"mlp_attn_norm"}},
      {"mlp_no_gate", {{"mlp_gate", "none"}}, {"mlp_attn_norm", "mlp_attn_gate"}},
      {"no_mega_gate", {{"mega_gate", false}}, {"mega_gate"}},
      {"silu", {{"activation", "silu"}}, {}},
      {"gelu", {{"activation", "gelu"}}, {}},
      {"no_detach", {{"detach_every", 0}}, {}},
      {"layer_input_cache_no_negator", {{"mega_cache", "previous_layer_input"}, {"negator", false}}, {"negator"}},
      {"no_solidifier", {{"solidifier", false}}, {"memory_solidifer"}},
      {"no_memory", {{"num_memory_tokens", 0}, {"solidifier", false}}, {"memory_solidifer"}},
      {"four_heads", {{"num_heads", 4}}, {}},
      {"two_heads_no_negator_qk_ema", {{"num_heads", 2}, {"negator", false}, {"ema_input", "queries_keys"}}, {"negator"}},
      {"bare_window", {{"num_memory_tokens", 0}, {"solidifier", false}, {"sep_tokens", false}},  // no rows around the tokens
       {"memory_solidifer", "sep_tokens"}},
  };
  return v;
}

Config variant_config(const Variant& v) {
  auto j = config_to_json(test::small_config(16, 2, 2, 24, 4, 30));
  for (const auto& [k, value] : v.overrides.items()) j[k] = value;
  return config_from_json(j, v.name);
}

class Variants : public ::testing::TestWithParam<Variant> {};

TEST_P(Variants, ParametersAndShapes) {
  const auto& v = GetParam();
  auto model = make_model(variant_config(v), 3);
  std::set<std::string> names;
  for (const auto& p : model->named_parameters()) names.insert(p.key());
  for (const auto& fragment : v.absent)
    for (const auto& n : names) EXPECT_EQ(n.find(fragment), std::string::npos) << n << " should be gone";
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(0, 30, {2, 11}, torch::kLong);
  auto out = model(ids);
  EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{2, 11, 30}));
  EXPECT_EQ(out.state.memory.sizes(), (std::vector<int64_t>{2, variant_config(v).num_memory_tokens, 16}));
  EXPECT_EQ(out.state.layers.size(), variant_config(v).xl_cache ? 2u : 0u);
  EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>());
}

TEST_P(Variants, DecoderEqualsTheForward) {
  auto model = make_model(variant_config(GetParam()), 4);
  model->eval();
  torch::manual_seed(5);
  auto ids = torch::randint(0, 30, {2, 11}, torch::kLong);  // 2 windows of 4 and a partial one
  torch::Tensor expect;
  {
    torch::NoGradGuard no_grad;
    expect = model(ids).logits;
  }
  Decoder dec(model, 2);
  for (int64_t t = 0; t < 11; ++t) {
    auto logits = dec.feed(ids.narrow(1, t, 1));
    EXPECT_TRUE(test::all_close(logits, expect.select(1, t), 1e-4, 1e-5)) << "token " << t + 1;
  }
}

// d loss / d p against (loss(p + e) − loss(p − e)) / 2e for one element of
// every parameter, in double, over 3 windows (so the cache, the memory and
// the EMA carry gradients across windows).
TEST_P(Variants, GradientsMatchFiniteDifferences) {
  auto model = make_model(variant_config(GetParam()), 6);
  model->to(torch::kDouble);
  model->eval();  // no detach between windows (training's detach_every cuts paths the differences see)
  torch::manual_seed(7);
  auto ids = torch::randint(0, 30, {1, 11}, torch::kLong);
  auto loss_of = [&] { return next_token_loss(model(ids).logits, ids); };
  model->zero_grad();
  loss_of().backward();
  torch::NoGradGuard no_grad;
  const double eps = 1e-6;
  int checked = 0;
  for (auto& p : model->named_parameters()) {
    if (!p.value().grad().defined() || p.value().numel() == 0) continue;  // unused gates; M = 0 memory tokens
    auto flat = p.value().view({-1});
    const int64_t i = (p.key().size() * 7919) % flat.numel();  // one element, spread over the tensor
    const double analytic = p.value().grad().view({-1})[i].item<double>();
    const double keep = flat[i].item<double>();
    flat[i] = keep + eps;
    const double up = loss_of().item<double>();
    flat[i] = keep - eps;
    const double down = loss_of().item<double>();
    flat[i] = keep;
    const double numeric = (up - down) / (2 * eps);
    EXPECT_NEAR(analytic, numeric, 1e-5 * std::abs(numeric) + 1e-7) << p.key();
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

// Impossible combinations are refused before anything is built.
TEST(VariantConfigs, ImpossibleCombinationsAreRefused) {
  auto error_of = [](nlohmann::json overrides) {
    auto j = config_to_json(test::small_config(16, 2, 2, 24, 4, 30));
    for (const auto& [k, value] : overrides.items()) j[k] = value;
    try {
      config_from_json(j, "plan.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of({{"num_memory_tokens", 0}}).find("plan.json: solidifier cannot be true with num_memory_tokens 0"),
            std::string::npos);
  EXPECT_NE(error_of({{"num_heads", 3}}).find("num_heads must be >= 1 and divide hidden_dim"), std::string::npos);
  EXPECT_NE(error_of({{"mlp_gate", "both"}}).find("'mlp_gate' must be one of attention, self, none"), std::string::npos);
  EXPECT_EQ(error_of({{"num_memory_tokens", 0}, {"solidifier", false}}), "");
}

INSTANTIATE_TEST_SUITE_P(Switches, Variants, ::testing::ValuesIn(variants()),
                         [](const ::testing::TestParamInfo<Variant>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace bakallm
