#include "io/model_dir.h"

#include <filesystem>
#include <set>
#include <sstream>

#include "data/tokenizer.h"
#include "io/safetensors.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/strings.h"

namespace fs = std::filesystem;

namespace bakallm {

namespace {

bool is_rotary_buffer(const std::string& name) { return ends_with(name, "pos_emb.freqs"); }

// Buffers a Hugging Face GPT-NeoX checkpoint may hold that are computed, not
// learned (the causal mask, its fill value, the rotary frequencies): skipped.
bool is_hf_computed_buffer(const std::string& name) {
  return ends_with(name, ".attention.bias") || ends_with(name, ".attention.masked_bias") ||
         ends_with(name, "rotary_emb.inv_freq");
}

std::string shape_str(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

std::string join_few(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 5; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 5) out += ", ... (" + std::to_string(names.size()) + " in all)";
  return out;
}

}  // namespace

void load_weights(BakaLM& model, const std::map<std::string, torch::Tensor>& tensors,
                  const std::string& source) {
  torch::NoGradGuard no_grad;
  std::vector<std::string> missing, misshapen, unexpected, wrong_values;
  std::set<std::string> used;
  auto copy_into = [&](const std::string& name, torch::Tensor& dst, bool optional) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      if (!optional) missing.push_back(name);
      return;
    }
    used.insert(name);
    if (it->second.sizes() != dst.sizes()) {
      misshapen.push_back(name + " " + shape_str(it->second) + " (expected " + shape_str(dst) + ")");
      return;
    }
    if (!it->second.is_floating_point()) {
      misshapen.push_back(name + " has a non-float dtype");
      return;
    }
    if (optional) {  // the rotary buffer: check (at the stored dtype's precision), never overwrite
      const auto stored = it->second.scalar_type();
      const auto expect = dst.to(torch::kCPU).to(stored).to(torch::kFloat);
      const double rtol = stored == torch::kFloat || stored == torch::kDouble ? 1e-5 : 1e-2;
      if (!torch::allclose(it->second.to(torch::kFloat), expect, rtol, 1e-7)) wrong_values.push_back(name);
      return;
    }
    dst.copy_(it->second);
  };
  for (auto& p : model->named_parameters()) copy_into(p.key(), p.value(), false);
  for (auto& b : model->named_buffers()) copy_into(b.key(), b.value(), is_rotary_buffer(b.key()));
  for (const auto& [name, t] : tensors)
    if (!used.count(name) && !(model->gpt_neox && is_hf_computed_buffer(name))) unexpected.push_back(name);

  std::string problems;
  auto add = [&](const char* what, const std::vector<std::string>& names) {
    if (!names.empty()) problems += std::string(problems.empty() ? "" : "; ") + what + ": " + join_few(names);
  };
  add("missing tensors", missing);
  add("unexpected tensors", unexpected);
  add("wrong shapes", misshapen);
  add("rotary frequencies differ from the config's", wrong_values);
  if (!problems.empty()) throw file_error(source, problems);
}

std::vector<std::pair<std::string, torch::Tensor>> model_tensors(BakaLM& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : model->named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : model->named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

void write_model_files(const std::string& dir, BakaLM& model, const std::string& tokenizer_path,
                       torch::ScalarType dtype) {
  auto tensors = model_tensors(model);
  for (auto& [name, t] : tensors) t = t.detach().to(torch::kCPU, dtype);
  save_config(model->config(), dir + "/config.json");
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  if (!tokenizer_path.empty()) {
    const std::string copy = dir + "/" + tokenizer_file_name(tokenizer_path);
    fs::copy_file(tokenizer_path, copy, fs::copy_options::overwrite_existing);
    fs::permissions(copy, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
  }
}

bool is_model_file(const std::string& name, bool is_dir) {
  return !is_dir && (name == "config.json" || name == "model.safetensors" || name == "tokenizer.model" ||
                     name == "tokenizer.json");
}

void save_model_dir(const std::string& dir_in, BakaLM& model, const std::string& tokenizer_path,
                    torch::ScalarType dtype) {
  const std::string dir = clean_dir(dir_in);
  if (!tokenizer_path.empty()) {
    if (!fs::exists(tokenizer_path)) throw file_error(tokenizer_path, "tokenizer not found");
    const Tokenizer tok(tokenizer_path);  // throws naming the file when it is no SentencePiece model
    require_vocab_fits(tok.vocab_size(), model->config().vocab_size, tokenizer_path);
  }
  // Replace a model directory (ours: config, weights, tokenizer), never anything else.
  require_only_own_files(dir, is_model_file, "bakallm",
                         "not a model directory; choose another --out (nothing was changed)");
  fs::path parent = fs::path(dir).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  write_dir_atomically(dir, [&](const std::string& tmp) { write_model_files(tmp, model, tokenizer_path, dtype); });
}

LoadedModel load_model_dir(const std::string& dir, const Runtime& runtime) {
  if (!fs::is_directory(dir)) throw file_error(dir, "not a model directory");
  const std::string weights = dir + "/model.safetensors";
  if (!fs::exists(weights)) throw file_error(weights, "missing (a model directory needs model.safetensors)");
  LoadedModel out;
  out.config = load_config(dir + "/config.json");
  out.model = BakaLM(out.config);
  load_weights(out.model, read_safetensors(weights).tensors, weights);
  out.model->to(runtime.device, runtime.dtype);
  out.model->eval();
  out.tokenizer_path = find_tokenizer(dir);
  return out;
}

}  // namespace bakallm
