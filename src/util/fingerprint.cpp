#include "util/fingerprint.h"

#include <cstdio>

#include "util/mapped_file.h"

namespace bakallm {

std::string file_fingerprint(const std::string& path) {
  MappedFile f(path);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < f.size(); ++i) h = (h ^ f.data()[i]) * 1099511628211ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "fnv1a64:%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace bakallm
