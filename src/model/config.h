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

// What feeds the EMA's output into attention (docs/VARIANTS.md).
enum class EmaInput {
  kValues,       // the prototype's: V and the mega gate read the EMA
  kQueriesKeys,  // MEGA as published: Q and K read the EMA, V the normed input
  kNone,         // no EMA and no mega-gate term
};
// What gates the MLP's output.
enum class MlpGate {
  kAttention,  // the prototype's: sigmoid(mlp_attn_gate(mlp_attn_norm(a)))
  kSelf,       // sigmoid(mlp_attn_gate(h)), the block's own normed input
  kNone,       // not gated
};
enum class Activation { kRelu, kSilu, kGelu };  // the MLP's

// Which network: BakaLLM, or the plain transformer it is compared with
// (GPT-NeoX / Pythia, docs/GPT_NEOX.md; config.json in Hugging Face's names).
enum class ModelType { kBakaLLM, kGptNeox };

struct Config {
  ModelType model_type = ModelType::kBakaLLM;
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
  // Design switches (docs/VARIANTS.md); the defaults are the prototype.
  EmaInput ema_input = EmaInput::kValues;
  bool negator = true;        // Q/K are [x ; negator − x] (2D wide), else x (D wide)
  bool qk_norm = true;        // LayerNorm on Q and K
  bool sep_tokens = true;     // a separator row on each side of the tokens
  bool xl_cache = true;       // each layer attends to (and its EMA continues from) the previous window
  bool past_kv_gates = true;  // the previous window's keys and values are gated
  MlpGate mlp_gate = MlpGate::kAttention;
  bool mega_gate = true;      // the m ⊙ sigmoid(mega_gate(m)) term
  Activation activation = Activation::kRelu;
  bool solidifier = true;     // the memory handed on is the solidifier's output, else the suffix rows (RMT)
  int64_t num_heads = 1;      // attention heads (Q/K width and D split evenly)

  // GPT-NeoX only (Hugging Face's fields; window_size is its training and
  // stream context, the attention sees no further back than its window).
  double rotary_pct = 0.25;             // share of each head's features that rotate
  bool use_parallel_residual = true;    // x + attn(ln1(x)) + mlp(ln2(x)), else sequential
  double layer_norm_eps = 1e-5;
  double hidden_dropout = 0.0;          // on the attention and MLP outputs in training
  int64_t max_position_embeddings = 2048;

  bool is_gpt_neox() const { return model_type == ModelType::kGptNeox; }

  // Rows of one extended window: [memory(M); sep; W tokens; sep; suffix(M)].
  int64_t separators() const { return sep_tokens && !is_gpt_neox() ? 1 : 0; }
  int64_t extended_window() const {
    return is_gpt_neox() ? window_size : window_size + 2 * (num_memory_tokens + separators());
  }

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
// walk this table. A GPT-NeoX config has its own table, in Hugging Face's names.
struct ConfigField {
  const char* name;
  const char* help;
  bool required;
  void (*read)(Config& c, const nlohmann::json& value, const std::string& where);  // throws Error
  nlohmann::json (*write)(const Config& c);
  std::string (*problem)(const Config& c);  // "" when the value is possible
};
const std::vector<ConfigField>& config_fields(ModelType type = ModelType::kBakaLLM);

// Parses and validates; unknown fields are errors. SOURCE names the file.
Config config_from_json(const nlohmann::json& j, const std::string& source);
Config load_config(const std::string& path);
nlohmann::json config_to_json(const Config& c);
void save_config(const Config& c, const std::string& path);

// "tiny" (D=320, L=8, I=1280) and "base" (D=768, L=12, I=2048), M=32, W=512;
// "pythia-14m" (GPT-NeoX: D=128, L=6, 4 heads, I=512, V=50304, W=2048).
Config preset(const std::string& name);
std::vector<std::string> preset_names();

}  // namespace bakallm
