// A model directory, as Hugging Face lays one out:
//   DIR/config.json        the Config
//   DIR/model.safetensors  every parameter under the spec's names
//   DIR/tokenizer.model    SentencePiece model, or
//   DIR/tokenizer.json     Hugging Face byte-level BPE (optional)
#pragma once
#include <map>
#include <string>

#include <torch/torch.h>

#include "model/baka_lm.h"
#include "model/runtime.h"

namespace bakallm {

// Copies TENSORS into MODEL's parameters and buffers. Missing, unexpected and
// misshapen tensors are reported by name in one Error (SOURCE names the file).
// `pos_emb.freqs` may be absent; when present it must equal the computed one.
void load_weights(BakaLM& model, const std::map<std::string, torch::Tensor>& tensors,
                  const std::string& source);

// Parameters (and the rotary buffers) as name -> tensor, for writing.
std::vector<std::pair<std::string, torch::Tensor>> model_tensors(BakaLM& model);

// Writes config.json, model.safetensors (in DTYPE) and tokenizer.model (if
// given) into the existing directory DIR, e.g. a temporary one.
void write_model_files(const std::string& dir, BakaLM& model, const std::string& tokenizer_path = "",
                       torch::ScalarType dtype = torch::kFloat);

// Writes DIR atomically: config, weights in DTYPE, and the tokenizer if given
// (checked: a SentencePiece model whose pieces fit the vocabulary). An
// existing DIR is replaced only when it holds nothing but those files (a
// model directory); anything else there is an Error and nothing changes.
void save_model_dir(const std::string& dir, BakaLM& model, const std::string& tokenizer_path = "",
                    torch::ScalarType dtype = torch::kFloat);

// Whether NAME is a file of a model directory (config.json, model.safetensors, tokenizer.model/.json).
bool is_model_file(const std::string& name, bool is_dir);

struct LoadedModel {
  Config config;
  BakaLM model{nullptr};
  std::string tokenizer_path;  // empty when the directory has none
};
LoadedModel load_model_dir(const std::string& dir, const Runtime& runtime = {});

}  // namespace bakallm
