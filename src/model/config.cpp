#include "model/config.h"

#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "util/atomic_file.h"
#include "util/error.h"

namespace bakallm {

namespace {

int64_t as_int(const nlohmann::json& v, const std::string& where) {
  if (!v.is_number_integer()) throw Error(where + " must be an integer");
  return v.get<int64_t>();
}

double as_real(const nlohmann::json& v, const std::string& where) {
  if (!v.is_number()) throw Error(where + " has the wrong type");
  return v.get<double>();
}

std::string as_text(const nlohmann::json& v, const std::string& where) {
  if (!v.is_string()) throw Error(where + " has the wrong type");
  return v.get<std::string>();
}

std::string unless(bool ok, const std::string& why, double value) {
  if (ok) return "";
  std::string v = std::to_string(value);
  if (value == static_cast<double>(static_cast<int64_t>(value))) v = std::to_string(static_cast<int64_t>(value));
  return why + ", got " + v;
}

// One row per field. The lambdas are captureless so the table is plain data.
// KEY is the JSON name of the Config member NAME (the same but for GPT-NeoX's fields).
#define BAKALLM_INT_KEY(KEY, NAME, REQUIRED, HELP, OK, WHY)                                                   \
  ConfigField {                                                                                            \
    KEY, HELP, REQUIRED, [](Config& c, const nlohmann::json& v, const std::string& w) { c.NAME = as_int(v, w); }, \
        [](const Config& c) { return nlohmann::json(c.NAME); },                                            \
        [](const Config& c) { const auto x = c.NAME; return unless(OK, WHY, static_cast<double>(x)); }     \
  }
#define BAKALLM_REAL_KEY(KEY, NAME, HELP, OK, WHY)                                                             \
  ConfigField {                                                                                              \
    KEY, HELP, false, [](Config& c, const nlohmann::json& v, const std::string& w) { c.NAME = as_real(v, w); }, \
        [](const Config& c) { return nlohmann::json(c.NAME); },                                              \
        [](const Config& c) { const auto x = c.NAME; return unless(OK, WHY, x); }                            \
  }

// A boolean field; OK (over c) says when its value is possible with the others.
#define BAKALLM_CHECKED_BOOL_KEY(KEY, NAME, HELP, OK, WHY)                                         \
  ConfigField {                                                                                    \
    KEY, HELP, false,                                                                            \
        [](Config& c, const nlohmann::json& v, const std::string& w) {                             \
          if (!v.is_boolean()) throw Error(w + " must be true or false");                          \
          c.NAME = v.get<bool>();                                                                  \
        },                                                                                         \
        [](const Config& c) { return nlohmann::json(c.NAME); },                                    \
        [](const Config& c) { return (OK) ? std::string() : std::string(WHY); }                    \
  }
#define BAKALLM_INT_FIELD(NAME, REQUIRED, HELP, OK, WHY) BAKALLM_INT_KEY(#NAME, NAME, REQUIRED, HELP, OK, WHY)
#define BAKALLM_REAL_FIELD(NAME, HELP, OK, WHY) BAKALLM_REAL_KEY(#NAME, NAME, HELP, OK, WHY)
#define BAKALLM_CHECKED_BOOL_FIELD(NAME, HELP, OK, WHY) BAKALLM_CHECKED_BOOL_KEY(#NAME, NAME, HELP, OK, WHY)
#define BAKALLM_BOOL_FIELD(NAME, HELP) BAKALLM_CHECKED_BOOL_FIELD(NAME, HELP, true, "")

// An enum field from its names, in the enum's order.
template <typename E, size_t N>
E enum_from(const nlohmann::json& v, const std::string& where, const std::array<const char*, N>& names) {
  const auto name = as_text(v, where);
  for (size_t i = 0; i < N; ++i)
    if (name == names[i]) return static_cast<E>(i);
  std::string known;
  for (size_t i = 0; i < N; ++i) known += std::string(i ? ", " : "") + names[i];
  throw Error(where + " must be one of " + known + ", got \"" + name + "\"");
}
#define BAKALLM_ENUM_FIELD(NAME, TYPE, NAMES, HELP) BAKALLM_ENUM_KEY(#NAME, NAME, TYPE, NAMES, HELP)
constexpr std::array<const char*, 2> kMegaCaches = {"previous_layer_output", "previous_layer_input"};
constexpr std::array<const char*, 3> kEmaInputs = {"values", "queries_keys", "none"};
constexpr std::array<const char*, 3> kMlpGates = {"attention", "self", "none"};
constexpr std::array<const char*, 3> kActivations = {"relu", "silu", "gelu"};
#define BAKALLM_ENUM_KEY(KEY, NAME, TYPE, NAMES, HELP)                                                      \
  ConfigField {                                                                                            \
    KEY, HELP, false,                                                                                    \
        [](Config& c, const nlohmann::json& v, const std::string& w) { c.NAME = enum_from<TYPE>(v, w, NAMES); }, \
        [](const Config& c) { return nlohmann::json(NAMES[static_cast<size_t>(c.NAME)]); },                 \
        [](const Config&) { return std::string(); }                                                        \
  }

const std::vector<ConfigField> kFields = {
    ConfigField{"model_type", "always \"bakallm\"", false,
                [](Config&, const nlohmann::json& v, const std::string& w) {
                  if (as_text(v, w) != "bakallm") throw Error(w + " must be \"bakallm\"");
                },
                [](const Config&) { return nlohmann::json("bakallm"); }, [](const Config&) { return std::string(); }},
    BAKALLM_INT_FIELD(hidden_dim, true, "D, the width of every layer", x > 0 && x % 2 == 0,
                      "must be a positive even number (rotary pairs)"),
    BAKALLM_INT_FIELD(num_layers, true, "L, the number of blocks", x > 0, "must be positive"),
    BAKALLM_INT_FIELD(num_memory_tokens, true, "M, memory tokens handed from window to window (0: none)",
                      x >= 0, "must be >= 0"),
    BAKALLM_INT_FIELD(intermediate_dim, false, "I, the MLP's inner width (4·D when absent)", x > 0, "must be positive"),
    BAKALLM_INT_FIELD(window_size, true, "W, text tokens per window", x > 0, "must be positive"),
    BAKALLM_INT_FIELD(vocab_size, true, "V, the embedding and head rows", x > 0, "must be positive"),
    BAKALLM_REAL_FIELD(attn_dropout, "dropout on the attention weights in training", x >= 0.0 && x < 1.0,
                       "must be in [0, 1)"),
    BAKALLM_INT_FIELD(detach_every, false,
                      "training: cut the graph to earlier windows every this many windows (0: only between steps)",
                      x >= 0, "must be >= 0"),
    BAKALLM_ENUM_FIELD(mega_cache, MegaCache, kMegaCaches,
                       "what the EMA continues from: previous_layer_output or previous_layer_input"),
    BAKALLM_REAL_FIELD(rope_base, "rotary frequency base", x > 1.0, "must be > 1"),
    BAKALLM_ENUM_FIELD(ema_input, EmaInput, kEmaInputs, "what reads the EMA: values, queries_keys, none"),
    BAKALLM_BOOL_FIELD(negator, "Q/K are [x ; negator - x] (2D wide), else x (D wide)"),
    BAKALLM_BOOL_FIELD(qk_norm, "LayerNorm on queries and keys"),
    BAKALLM_BOOL_FIELD(sep_tokens, "a separator row on each side of a window's tokens"),
    BAKALLM_BOOL_FIELD(xl_cache, "each layer attends to the previous window (Transformer-XL cache)"),
    BAKALLM_BOOL_FIELD(past_kv_gates, "the previous window's keys and values are gated"),
    BAKALLM_ENUM_FIELD(mlp_gate, MlpGate, kMlpGates, "what gates the MLP: attention, self, none"),
    BAKALLM_BOOL_FIELD(mega_gate, "the m * sigmoid(mega_gate(m)) term"),
    BAKALLM_ENUM_FIELD(activation, Activation, kActivations, "the MLP's activation: relu, silu, gelu"),
    BAKALLM_CHECKED_BOOL_FIELD(solidifier,
                               "the memory handed on is the solidifier's output (else the suffix rows, as in RMT)",
                               !(c.solidifier && c.num_memory_tokens == 0),
                               "cannot be true with num_memory_tokens 0 (there is no memory to solidify)"),
    BAKALLM_INT_FIELD(num_heads, false, "attention heads", x >= 1 && c.hidden_dim % x == 0,
                      "must be >= 1 and divide hidden_dim"),
};
// GPT-NeoX, in the names of Hugging Face's GPTNeoXConfig (window_size is ours).
const std::vector<ConfigField> kNeoXFields = {
    ConfigField{"model_type", "always \"gpt_neox\"", true,
                [](Config& c, const nlohmann::json& v, const std::string& w) {
                  if (as_text(v, w) != "gpt_neox") throw Error(w + " must be \"gpt_neox\"");
                  c.model_type = ModelType::kGptNeox;
                },
                [](const Config&) { return nlohmann::json("gpt_neox"); }, [](const Config&) { return std::string(); }},
    BAKALLM_INT_KEY("hidden_size", hidden_dim, true, "D, the width of every layer", x > 0, "must be positive"),
    BAKALLM_INT_KEY("num_hidden_layers", num_layers, true, "L, the number of layers", x > 0, "must be positive"),
    BAKALLM_INT_KEY("num_attention_heads", num_heads, true, "H, attention heads of D/H features",
                    x >= 1 && c.hidden_dim % x == 0, "must be >= 1 and divide hidden_size"),
    BAKALLM_INT_KEY("intermediate_size", intermediate_dim, true, "I, the MLP's inner width", x > 0, "must be positive"),
    BAKALLM_INT_FIELD(vocab_size, true, "V, the embedding and head rows", x > 0, "must be positive"),
    BAKALLM_INT_FIELD(max_position_embeddings, false, "the longest context the model was trained for", x > 0,
                      "must be positive"),
    BAKALLM_INT_FIELD(window_size, false,
                      "bakallm: tokens per training row and per stream-protocol window (max_position_embeddings "
                      "when absent)",
                      x > 0, "must be positive"),
    BAKALLM_REAL_FIELD(rotary_pct, "share of each head's features that rotate",
                       x > 0.0 && x <= 1.0 && static_cast<int64_t>(c.hidden_dim / c.num_heads * x) % 2 == 0,
                       "must be in (0, 1] and rotate an even number of each head's features"),
    BAKALLM_REAL_KEY("rotary_emb_base", rope_base, "rotary frequency base", x > 1.0, "must be > 1"),
    BAKALLM_REAL_FIELD(layer_norm_eps, "LayerNorm epsilon", x > 0.0, "must be > 0"),
    BAKALLM_BOOL_FIELD(use_parallel_residual, "x + attn(ln1(x)) + mlp(ln2(x)) (else the sequential residual)"),
    BAKALLM_ENUM_KEY("hidden_act", activation, Activation, kActivations,
                     "the MLP's activation: gelu (exact, erf), relu, silu"),
    BAKALLM_REAL_KEY("attention_dropout", attn_dropout, "dropout on the attention weights in training",
                     x >= 0.0 && x < 1.0, "must be in [0, 1)"),
    BAKALLM_REAL_FIELD(hidden_dropout, "dropout on the attention and MLP outputs in training", x >= 0.0 && x < 1.0,
                       "must be in [0, 1)"),
};

// Hugging Face fields that do not change the computation: read and ignored.
const char* const kNeoXIgnored[] = {"architectures", "bos_token_id", "eos_token_id", "initializer_range",
                                    "torch_dtype", "transformers_version", "use_cache", "classifier_dropout",
                                    "_name_or_path"};
// Hugging Face fields with the one value bakallm implements.
const std::pair<const char*, nlohmann::json> kNeoXFixed[] = {
    {"tie_word_embeddings", false}, {"attention_bias", true}, {"rope_scaling", nullptr}};
#undef BAKALLM_BOOL_FIELD
#undef BAKALLM_CHECKED_BOOL_FIELD
#undef BAKALLM_ENUM_FIELD
#undef BAKALLM_INT_FIELD
#undef BAKALLM_REAL_FIELD
#undef BAKALLM_INT_KEY
#undef BAKALLM_REAL_KEY
#undef BAKALLM_CHECKED_BOOL_KEY
#undef BAKALLM_ENUM_KEY

}  // namespace

const std::vector<ConfigField>& config_fields(ModelType type) {
  return type == ModelType::kGptNeox ? kNeoXFields : kFields;
}

double Config::parameter_estimate() const {
  const double D = static_cast<double>(hidden_dim), I = static_cast<double>(intermediate_dim);
  if (is_gpt_neox())  // embed_in, embed_out; per layer qkv, dense, MLP, two norms; final norm
    return 2 * static_cast<double>(vocab_size) * D + static_cast<double>(num_layers) * (4 * D * D + 2 * D * I + 9 * D + I) +
           2 * D;
  const double block = 8 * D * D + 3 * D * I + 21 * D;  // qkv, gates, MLP, norms, EMA
  return 2 * static_cast<double>(vocab_size) * D + (static_cast<double>(num_layers) + 1) * block +
         2 * static_cast<double>(num_memory_tokens) * D;
}

double Config::memory_estimate() const {
  const double T = static_cast<double>(extended_window()), D = static_cast<double>(hidden_dim);
  const double L = static_cast<double>(num_layers) + 1, I = static_cast<double>(intermediate_dim);
  const double weights = 16 * parameter_estimate();                   // float32 weights, gradients, AdamW
  const double scores = 2 * T * (is_gpt_neox() ? static_cast<double>(num_heads) : 1.0);
  const double activations = 4 * L * T * (scores + 24 * D + 3 * I);  // one row of one window, kept for backward
  return weights + activations;
}

namespace {
void require_fits_in_memory(const Config& c, const std::string& source) {
  const double have = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  const double need = c.memory_estimate();
  if (need <= have) return;
  // Name the field that is furthest beyond the base preset's value.
  const Config base = preset("base");
  const std::pair<const char*, double> ratios[] = {
      {"hidden_dim", double(c.hidden_dim) / double(base.hidden_dim)},
      {"num_layers", double(c.num_layers) / double(base.num_layers)},
      {"intermediate_dim", double(c.intermediate_dim) / double(base.intermediate_dim)},
      {"window_size", double(c.window_size) / double(base.window_size)},
      {"num_memory_tokens", double(c.num_memory_tokens) / double(base.num_memory_tokens)},
      {"vocab_size", double(c.vocab_size) / double(base.vocab_size)}};
  auto worst = ratios[0];
  for (const auto& r : ratios)  // an intermediate_dim of 4·D follows hidden_dim: name that
    if (r.second > worst.second && !(r.first == std::string("intermediate_dim") && c.intermediate_dim == 4 * c.hidden_dim))
      worst = r;
  char why[256];
  std::snprintf(why, sizeof why,
                "%s is too large: the model would need about %.3g GB to train (%.3g parameters), this machine has "
                "%.3g GB",
                worst.first, need / 1e9, c.parameter_estimate(), have / 1e9);
  throw Error(source + ": " + why);
}
}  // namespace

void Config::validate(const std::string& source) const {
  for (const auto& f : config_fields(model_type)) {
    const auto why = f.problem(*this);
    if (!why.empty()) throw Error(source + ": " + f.name + " " + why);
  }
  require_fits_in_memory(*this, source);
}



Config config_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config must be a JSON object");
  const bool neox = j.contains("model_type") && j.at("model_type") == "gpt_neox";
  const auto& fields = neox ? kNeoXFields : kFields;
  for (const auto& item : j.items()) {
    bool known = false;
    for (const auto& f : fields) known = known || item.key() == f.name;
    if (neox) {
      for (const char* name : kNeoXIgnored) known = known || item.key() == name;
      for (const auto& fixed : kNeoXFixed)
        if (item.key() == fixed.first) {
          if (item.value() != fixed.second)
            throw Error(source + ": field '" + item.key() + "' must be " + fixed.second.dump() +
                        " (the only value bakallm implements)");
          known = true;
        }
    }
    if (!known) throw Error(source + ": unknown field '" + item.key() + "'");
  }
  Config c;
  if (neox) {  // what a GPT-NeoX layer does not have
    c.num_memory_tokens = 0;
    c.solidifier = false;
    c.activation = Activation::kGelu;
    c.attn_dropout = 0.0;
  }
  for (const auto& f : fields) {
    if (j.contains(f.name)) f.read(c, j.at(f.name), source + ": field '" + f.name + "'");
    else if (f.required) throw Error(source + ": missing field '" + std::string(f.name) + "'");
  }
  if (!neox && !j.contains("intermediate_dim")) c.intermediate_dim = 4 * c.hidden_dim;
  if (neox && !j.contains("window_size")) c.window_size = c.max_position_embeddings;
  c.validate(source);
  return c;
}

Config load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw file_error(path, "cannot open config");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw file_error(path, std::string("invalid JSON: ") + e.what());
  }
  return config_from_json(j, path);
}

nlohmann::json config_to_json(const Config& c) {
  nlohmann::json j = nlohmann::json::object();
  if (c.is_gpt_neox()) {  // so Hugging Face's transformers load the directory too
    j["architectures"] = {"GPTNeoXForCausalLM"};
    j["tie_word_embeddings"] = false;
  }
  for (const auto& f : config_fields(c.model_type)) j[f.name] = f.write(c);
  return j;
}

void save_config(const Config& c, const std::string& path) {
  write_file_atomically(path, [&](std::ostream& out) { out << config_to_json(c).dump(2) << "\n"; });
}

Config preset(const std::string& name) {
  Config c;  // defaults are the author's "proper" model
  c.num_memory_tokens = 32;
  c.window_size = 512;
  c.vocab_size = 32000;
  if (name == "tiny") {
    c.hidden_dim = 320;
    c.num_layers = 8;
    c.intermediate_dim = 1280;
  } else if (name == "base") {
    c.hidden_dim = 768;
    c.num_layers = 12;
    c.intermediate_dim = 2048;
  } else if (name == "pythia-14m") {  // EleutherAI/pythia-14m's config.json
    c = config_from_json({{"model_type", "gpt_neox"}, {"hidden_size", 128}, {"num_hidden_layers", 6},
                          {"num_attention_heads", 4}, {"intermediate_size", 512}, {"vocab_size", 50304},
                          {"max_position_embeddings", 2048}, {"rotary_pct", 0.25}, {"rotary_emb_base", 10000},
                          {"layer_norm_eps", 1e-5}, {"use_parallel_residual", true}, {"hidden_act", "gelu"}},
                         "preset pythia-14m");
  } else {
    throw Error("unknown preset '" + name + "' (known: tiny, base, pythia-14m)");
  }
  return c;
}

std::vector<std::string> preset_names() { return {"tiny", "base", "pythia-14m"}; }

}  // namespace bakallm
