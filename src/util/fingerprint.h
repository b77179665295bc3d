// A content fingerprint of a file: FNV-1a 64 over its bytes, as "fnv1a64:<16 hex>".
// Enough to tell checkpoints apart in a results table; not a security hash.
#pragma once
#include <string>

namespace bakallm {
std::string file_fingerprint(const std::string& path);
}
