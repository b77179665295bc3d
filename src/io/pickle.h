// A small, allow-listed unpickler for the `data.pkl` of a torch.save'd
// state_dict. It knows only the opcodes and globals a state_dict uses
// (OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter,
// torch.*Storage); anything else is an Error. Unlike Python's pickle it never
// calls arbitrary code, so it is safe on untrusted files.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>

#include <torch/torch.h>

namespace bakallm {

// Returns the bytes of storage record KEY ("data/KEY" in the archive).
using StorageLoader = std::function<std::pair<const void*, size_t>(const std::string& key)>;

// Unpickles BYTES into a flat name -> tensor map (a dict of tensors; a dict
// holding one under "state_dict" or "model" is descended into). Tensors are
// CPU copies in their stored dtype. SOURCE names the file in errors.
std::map<std::string, torch::Tensor> unpickle_state_dict(const uint8_t* bytes, size_t size,
                                                         const StorageLoader& load,
                                                         const std::string& source);

}  // namespace bakallm
