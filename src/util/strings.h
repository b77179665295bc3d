// Small string helpers (C++17 has no starts_with/ends_with).
#pragma once
#include <string>

namespace bakallm {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace bakallm
