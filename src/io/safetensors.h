// safetensors: an 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the tensor bytes. Every field is validated before a byte is read: a
// truncated or corrupted file is an Error naming the file, never a crash.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace bakallm {

struct SafetensorsEntry {
  std::string name;
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;        // in file order of offsets
  std::map<std::string, std::string> metadata;  // "__metadata__"
  uint64_t data_start = 0;                      // 8 + N
};

// Parses and validates the header of BYTES[0, size) (SOURCE names it in errors).
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t size,
                                           const std::string& source);

// Everything in the file, as CPU tensors of the stored dtype (copied out).
struct Safetensors {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};
Safetensors read_safetensors(const std::string& path);
Safetensors parse_safetensors(const uint8_t* bytes, size_t size, const std::string& source);

// Writes atomically (temporary name, then rename). Tensors of dtypes
// F32/F16/BF16/F64/I64/I32/I16/I8/U8/BOOL are accepted; moved to CPU.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// "F32" <-> kFloat and friends; throws Error on an unknown name.
torch::ScalarType safetensors_dtype(const std::string& name, const std::string& source);
std::string safetensors_dtype_name(torch::ScalarType t);

}  // namespace bakallm
