// A whole file read into a string, or written from one, in a test.
#pragma once
#include <filesystem>
#include <fstream>
#include <string>

namespace bakallm::test {

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes BYTES to PATH, making its directories first.
inline void write_file(const std::string& path, const std::string& bytes) {
  const auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace bakallm::test
