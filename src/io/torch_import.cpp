#include "io/torch_import.h"

#include <caffe2/serialize/inline_container.h>

#include <filesystem>
#include <fstream>

#include "io/pickle.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/strings.h"

namespace bakallm {

namespace {

std::string strip_wrappers(std::string name) {
  for (const std::string prefix : {"module.", "_orig_mod."})
    while (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
  return name;
}

}  // namespace

std::map<std::string, torch::Tensor> read_torch_state_dict(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path);
    if (reader.hasRecord("byteorder")) {
      auto [ptr, n] = reader.getRecord("byteorder");
      if (std::string(static_cast<const char*>(ptr.get()), n) != "little")
        throw file_error(path, "big-endian checkpoints are not supported");
    }
    if (!reader.hasRecord("data.pkl")) throw file_error(path, "zip has no data.pkl (not a torch.save file)");
    auto [pkl, pkl_size] = reader.getRecord("data.pkl");
    std::map<std::string, at::DataPtr> records;  // keeps loaded storages alive
    StorageLoader load = [&](const std::string& key) -> std::pair<const void*, size_t> {
      const std::string name = "data/" + key;
      if (!reader.hasRecord(name)) throw file_error(path, "missing storage record " + name);
      auto [ptr, n] = reader.getRecord(name);
      const void* raw = ptr.get();
      records[key] = std::move(ptr);
      return {raw, n};
    };
    return unpickle_state_dict(static_cast<const uint8_t*>(pkl.get()), pkl_size, load, path);
  } catch (const c10::Error& e) {
    throw file_error(path, "not a readable torch.save zip: " + first_line(e.what_without_backtrace()));
  }
}

std::map<std::string, torch::Tensor> read_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw file_error(path, "cannot open checkpoint");
  char magic[4] = {0, 0, 0, 0};
  in.read(magic, 4);
  const bool zip = magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4;
  std::map<std::string, torch::Tensor> raw =
      zip ? read_torch_state_dict(path) : read_safetensors(path).tensors;
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, t] : raw) out[strip_wrappers(name)] = t;
  return out;
}

std::string hugging_face_weights(const std::string& dir) {
  namespace fs = std::filesystem;
  for (const char* name : {"model.safetensors", "pytorch_model.bin"})
    if (fs::is_regular_file(fs::path(dir) / name)) return (fs::path(dir) / name).string();
  for (const char* index : {"model.safetensors.index.json", "pytorch_model.bin.index.json"})
    if (fs::exists(fs::path(dir) / index))
      throw file_error(dir, std::string("holds a sharded checkpoint (") + index + "), which bakallm does not read");
  throw file_error(dir, "holds no model.safetensors or pytorch_model.bin");
}

}  // namespace bakallm
