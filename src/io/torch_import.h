// Reads the author's prototype checkpoints: a torch.save'd state_dict (zip
// format) or a safetensors file, as a flat name -> CPU tensor map.
#pragma once
#include <map>
#include <string>

#include <torch/torch.h>

namespace bakallm {

// A torch.save zip: data.pkl through our allow-listed unpickler, storages
// through libtorch's zip reader. Errors name the file.
std::map<std::string, torch::Tensor> read_torch_state_dict(const std::string& path);

// Either format, chosen by the file's first bytes (zip "PK\3\4" or safetensors).
// Prefixes added by wrappers ("module.", "_orig_mod.") are stripped.
std::map<std::string, torch::Tensor> read_checkpoint(const std::string& path);

// The weights file of a Hugging Face model directory: model.safetensors, else
// pytorch_model.bin. A sharded checkpoint (*.index.json) is an Error.
std::string hugging_face_weights(const std::string& dir);

}  // namespace bakallm
