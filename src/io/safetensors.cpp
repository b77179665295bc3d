#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/mapped_file.h"

namespace bakallm {

namespace {

constexpr uint64_t kMaxHeader = 100u << 20;  // 100 MiB of JSON is already absurd

const std::vector<std::pair<std::string, torch::ScalarType>>& dtype_table() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> table = {
      {"F32", torch::kFloat},  {"F16", torch::kHalf}, {"BF16", torch::kBFloat16},
      {"F64", torch::kDouble}, {"I64", torch::kLong}, {"I32", torch::kInt},
      {"I16", torch::kShort},  {"I8", torch::kChar},  {"U8", torch::kByte},
      {"BOOL", torch::kBool}};
  return table;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

SafetensorsEntry parse_entry(const std::string& name, const nlohmann::json& v,
                             const std::string& source) {
  auto bad = [&](const std::string& why) { return file_error(source, "tensor '" + name + "': " + why); };
  if (!v.is_object()) throw bad("entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key)) throw bad(std::string("missing '") + key + "'");
  if (!v["dtype"].is_string()) throw bad("dtype is not a string");
  SafetensorsEntry e;
  e.name = name;
  e.dtype = safetensors_dtype(v["dtype"].get<std::string>(), source + ": tensor '" + name + "'");
  const auto& shape = v["shape"];
  if (!shape.is_array()) throw bad("shape is not an array");
  uint64_t numel = 1;
  for (const auto& d : shape) {
    if (!d.is_number_unsigned()) throw bad("shape has a non-integer or negative dimension");
    const uint64_t n = d.get<uint64_t>();
    if (n > 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / n) throw bad("shape overflows");
    numel *= n;
    e.shape.push_back(static_cast<int64_t>(n));
  }
  const auto& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    throw bad("data_offsets must be two non-negative integers");
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  if (e.end < e.begin) throw bad("data_offsets end before begin");
  const uint64_t expect = numel * c10::elementSize(e.dtype);
  if (e.end - e.begin != expect)
    throw bad("data_offsets span " + std::to_string(e.end - e.begin) + " bytes but dtype and shape need " +
              std::to_string(expect));
  return e;
}

}  // namespace

torch::ScalarType safetensors_dtype(const std::string& name, const std::string& source) {
  for (const auto& [n, t] : dtype_table())
    if (n == name) return t;
  throw Error(source + ": unsupported dtype '" + name + "'");
}

std::string safetensors_dtype_name(torch::ScalarType t) {
  for (const auto& [n, s] : dtype_table())
    if (s == t) return n;
  throw Error(std::string("safetensors: cannot store dtype ") + c10::toString(t));
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t size,
                                           const std::string& source) {
  if (size < 8) throw file_error(source, "too short to be safetensors (" + std::to_string(size) + " bytes)");
  const uint64_t n = read_u64_le(bytes);
  if (n > kMaxHeader) throw file_error(source, "header length " + std::to_string(n) + " is implausible");
  if (n > size - 8)
    throw file_error(source, "truncated: header says " + std::to_string(n) + " bytes of JSON, file has " +
                                 std::to_string(size - 8));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(bytes + 8, bytes + 8 + n);
  } catch (const nlohmann::json::exception& e) {
    throw file_error(source, std::string("header is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw file_error(source, "header is not a JSON object");

  SafetensorsHeader h;
  h.data_start = 8 + n;
  const uint64_t data_size = size - h.data_start;
  for (const auto& item : j.items()) {
    if (item.key() == "__metadata__") {
      if (!item.value().is_object()) throw file_error(source, "__metadata__ is not an object");
      for (const auto& m : item.value().items()) {
        if (!m.value().is_string()) throw file_error(source, "__metadata__ values must be strings");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    h.entries.push_back(parse_entry(item.key(), item.value(), source));
    if (h.entries.back().end > data_size)
      throw file_error(source, "tensor '" + item.key() + "' ends at byte " +
                                   std::to_string(h.entries.back().end) + " of a " +
                                   std::to_string(data_size) + "-byte data section (truncated?)");
  }
  std::sort(h.entries.begin(), h.entries.end(),
            [](const auto& a, const auto& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
  for (size_t i = 1; i < h.entries.size(); ++i)
    if (h.entries[i].begin < h.entries[i - 1].end)
      throw file_error(source, "tensors '" + h.entries[i - 1].name + "' and '" + h.entries[i].name + "' overlap");
  return h;
}

Safetensors parse_safetensors(const uint8_t* bytes, size_t size, const std::string& source) {
  const auto header = parse_safetensors_header(bytes, size, source);
  Safetensors out;
  out.metadata = header.metadata;
  for (const auto& e : header.entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), bytes + header.data_start + e.begin, e.end - e.begin);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

Safetensors read_safetensors(const std::string& path) {
  MappedFile file(path);
  return parse_safetensors(file.data(), file.size(), path);
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") throw Error(path + ": '__metadata__' is not a tensor name");
    if (header.contains(name)) throw Error(path + ": duplicate tensor name '" + name + "'");
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", safetensors_dtype_name(t.scalar_type())},
                    {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  write_file_atomically(path, [&](std::ostream& out) {
    uint8_t len[8];
    uint64_t n = json.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(json.data(), static_cast<std::streamsize>(json.size()));
    for (const auto& t : data)
      out.write(static_cast<const char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  });
}

}  // namespace bakallm
