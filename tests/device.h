// The device the model tests run on: CPU, or the one BAKALLM_TEST_DEVICE
// names ("cuda", "cuda:1") where a libtorch build has it, so the same golden
// and decoder tests hold a CUDA build to the same tolerances.
#pragma once
#include <cstdlib>

#include <torch/torch.h>

namespace bakallm::test {

inline torch::Device device() {
  const char* name = std::getenv("BAKALLM_TEST_DEVICE");
  return name && *name ? torch::Device(name) : torch::Device(torch::kCPU);
}

}  // namespace bakallm::test
