// libFuzzer: any byte string given to the safetensors parser yields tensors or
// a bakallm::Error, never a crash or an out-of-bounds read.
#include <cstddef>
#include <cstdint>

#include "io/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    bakallm::parse_safetensors(data, size, "fuzz");
  } catch (const bakallm::Error&) {
  }
  return 0;
}
