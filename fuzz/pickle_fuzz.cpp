// libFuzzer: the allow-listed unpickler on arbitrary data.pkl bytes, with a
// storage loader serving 64 zero bytes for any key.
#include <cstddef>
#include <cstdint>

#include "io/pickle.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const uint8_t zeros[64] = {};
  bakallm::StorageLoader load = [](const std::string&) { return std::pair<const void*, size_t>(zeros, sizeof zeros); };
  try {
    bakallm::unpickle_state_dict(data, size, load, "fuzz");
  } catch (const bakallm::Error&) {
  }
  return 0;
}
