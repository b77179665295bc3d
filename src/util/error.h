// One exception type for every user-facing failure. The message names the
// file or field at fault and fits on one line; the CLI prints it and exits 1.
#pragma once
#include <stdexcept>
#include <string>

namespace bakallm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// "PATH: problem", the shape of every file error.
inline Error file_error(const std::string& path, const std::string& problem) {
  return Error(path + ": " + problem);
}

}  // namespace bakallm
