#include "model/config.h"

#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "util/atomic_file.h"
#include "util/error.h"

namespace bakallm {

namespace {

const char* mega_cache_name(MegaCache m) {
  return m == MegaCache::kPreviousLayerOutput ? "previous_layer_output"
                                              : "previous_layer_input";
}

template <typename T>
T read_field(const nlohmann::json& j, const char* key, const std::string& source) {
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(source + ": field '" + key + "' has the wrong type");
  }
}

int64_t read_int(const nlohmann::json& j, const char* key, const std::string& source) {
  const auto& v = j.at(key);
  if (!v.is_number_integer())
    throw Error(source + ": field '" + key + "' must be an integer");
  return v.get<int64_t>();
}

}  // namespace

void Config::validate(const std::string& source) const {
  auto fail = [&](const std::string& field, const std::string& why) {
    throw Error(source + ": " + field + " " + why);
  };
  if (hidden_dim <= 0 || hidden_dim % 2 != 0)
    fail("hidden_dim", "must be a positive even number (rotary pairs), got " + std::to_string(hidden_dim));
  if (num_layers <= 0) fail("num_layers", "must be positive, got " + std::to_string(num_layers));
  if (num_memory_tokens <= 0)
    fail("num_memory_tokens", "must be positive, got " + std::to_string(num_memory_tokens));
  if (intermediate_dim <= 0)
    fail("intermediate_dim", "must be positive, got " + std::to_string(intermediate_dim));
  if (window_size <= 0) fail("window_size", "must be positive, got " + std::to_string(window_size));
  if (vocab_size <= 0) fail("vocab_size", "must be positive, got " + std::to_string(vocab_size));
  if (!(attn_dropout >= 0.0 && attn_dropout < 1.0))
    fail("attn_dropout", "must be in [0, 1), got " + std::to_string(attn_dropout));
  if (detach_every <= 0) fail("detach_every", "must be positive, got " + std::to_string(detach_every));
  if (!(rope_base > 1.0)) fail("rope_base", "must be > 1, got " + std::to_string(rope_base));
}

Config config_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config must be a JSON object");
  static const std::set<std::string> known = {
      "hidden_dim", "num_layers", "num_memory_tokens", "intermediate_dim",
      "window_size", "vocab_size", "attn_dropout", "detach_every",
      "mega_cache", "rope_base", "model_type"};
  for (const auto& item : j.items())
    if (!known.count(item.key()))
      throw Error(source + ": unknown field '" + item.key() + "'");
  for (const char* required : {"hidden_dim", "num_layers", "num_memory_tokens",
                               "window_size", "vocab_size"})
    if (!j.contains(required))
      throw Error(source + ": missing field '" + std::string(required) + "'");

  Config c;
  c.hidden_dim = read_int(j, "hidden_dim", source);
  c.num_layers = read_int(j, "num_layers", source);
  c.num_memory_tokens = read_int(j, "num_memory_tokens", source);
  c.window_size = read_int(j, "window_size", source);
  c.vocab_size = read_int(j, "vocab_size", source);
  c.intermediate_dim = j.contains("intermediate_dim")
                           ? read_int(j, "intermediate_dim", source)
                           : 4 * c.hidden_dim;
  if (j.contains("attn_dropout")) c.attn_dropout = read_field<double>(j, "attn_dropout", source);
  if (j.contains("detach_every")) c.detach_every = read_int(j, "detach_every", source);
  if (j.contains("rope_base")) c.rope_base = read_field<double>(j, "rope_base", source);
  if (j.contains("model_type") && read_field<std::string>(j, "model_type", source) != "bakallm")
    throw Error(source + ": model_type must be \"bakallm\"");
  if (j.contains("mega_cache")) {
    const auto m = read_field<std::string>(j, "mega_cache", source);
    if (m == "previous_layer_output") c.mega_cache = MegaCache::kPreviousLayerOutput;
    else if (m == "previous_layer_input") c.mega_cache = MegaCache::kPreviousLayerInput;
    else
      throw Error(source + ": mega_cache must be \"previous_layer_output\" or "
                  "\"previous_layer_input\", got \"" + m + "\"");
  }
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
  return {{"model_type", "bakallm"},
          {"hidden_dim", c.hidden_dim},
          {"num_layers", c.num_layers},
          {"num_memory_tokens", c.num_memory_tokens},
          {"intermediate_dim", c.intermediate_dim},
          {"window_size", c.window_size},
          {"vocab_size", c.vocab_size},
          {"attn_dropout", c.attn_dropout},
          {"detach_every", c.detach_every},
          {"mega_cache", mega_cache_name(c.mega_cache)},
          {"rope_base", c.rope_base}};
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
  } else {
    throw Error("unknown preset '" + name + "' (known: tiny, base)");
  }
  return c;
}

std::vector<std::string> preset_names() { return {"tiny", "base"}; }

}  // namespace bakallm
