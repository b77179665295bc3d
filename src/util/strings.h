// Small string helpers (C++17 has no starts_with/ends_with).
#pragma once
#include <string>

namespace bakallm {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// S up to its first newline (an exception's message without what follows).
inline std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace bakallm
