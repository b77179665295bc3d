// Where tests find the shared golden files, data and the CLI binary.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace bakallm::test {

// ../shared beside the checkout (BAKALLM_SHARED overrides).
inline std::string shared_dir() {
  if (const char* env = std::getenv("BAKALLM_SHARED")) return env;
  return std::string(BAKALLM_SOURCE_DIR) + "/../shared";
}
inline std::string golden(const std::string& name) { return shared_dir() + "/golden/" + name; }
inline std::string data(const std::string& name) { return shared_dir() + "/data/" + name; }
inline std::string fixture(const std::string& name) {
  return std::string(BAKALLM_SOURCE_DIR) + "/tests/fixtures/" + name;
}
inline std::string binary() { return BAKALLM_BINARY; }

// A fresh empty directory under the system temp dir, removed by the caller's TempDir.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("bakallm_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

}  // namespace bakallm::test
