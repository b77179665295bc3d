// The model's hyper-parameters: JSON <-> struct, presets, validation.
// Field names are those of ../shared/golden/tiny.config.json.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace bakallm {

// What the EMA of layer i reads from the previous window.
enum class MegaCache {
  kPreviousLayerOutput,  // the prototype's choice: layer i's output
  kPreviousLayerInput,   // layer i's input
};

struct Config {
  int64_t hidden_dim = 768;        // D
  int64_t num_layers = 12;         // L
  int64_t num_memory_tokens = 32;  // M
  int64_t intermediate_dim = 2048; // I (4·D when absent from JSON)
  int64_t window_size = 512;       // W
  int64_t vocab_size = 32000;      // V
  double attn_dropout = 0.1;
  int64_t detach_every = 2;
  MegaCache mega_cache = MegaCache::kPreviousLayerOutput;
  double rope_base = 10000.0;

  // Rows of one extended window: [memory(M); sep; W tokens; sep; suffix(M)].
  int64_t extended_window() const { return window_size + 2 * num_memory_tokens + 2; }

  // Throws Error("SOURCE: field: problem") on an impossible value, or when
  // training the model would need more memory than this machine has.
  void validate(const std::string& source) const;

  // Parameters, counted from the sizes (no model is built).
  double parameter_estimate() const;
  // Bytes to train one row: weights, gradients and AdamW moments in float32,
  // and one window's activations.
  double memory_estimate() const;
};

// Each config.json field, declared once: name, meaning, how it is read,
// written and checked. Parsing, validation, writing and `bakallm info` all
// walk this table.
struct ConfigField {
  const char* name;
  const char* help;
  bool required;
  void (*read)(Config& c, const nlohmann::json& value, const std::string& where);  // throws Error
  nlohmann::json (*write)(const Config& c);
  std::string (*problem)(const Config& c);  // "" when the value is possible
};
const std::vector<ConfigField>& config_fields();

// Parses and validates; unknown fields are errors. SOURCE names the file.
Config config_from_json(const nlohmann::json& j, const std::string& source);
Config load_config(const std::string& path);
nlohmann::json config_to_json(const Config& c);
void save_config(const Config& c, const std::string& path);

// "tiny" (D=320, L=8, I=1280) and "base" (D=768, L=12, I=2048), M=32, W=512.
Config preset(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace bakallm
