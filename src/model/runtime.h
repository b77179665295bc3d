// Device, dtype and thread choices, in one place. Everything that creates a
// tensor for the model asks here instead of hard-coding kCPU / kFloat.
#pragma once
#include <string>

#include <torch/torch.h>

namespace bakallm {

struct Runtime {
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat;  // parameter / activation dtype
  int threads = 0;                          // 0: all cores

  torch::TensorOptions options() const { return torch::TensorOptions().device(device).dtype(dtype); }
  torch::TensorOptions index_options() const {
    return torch::TensorOptions().device(device).dtype(torch::kLong);
  }
};

// libtorch defaults to one intra-op thread on this platform: set it explicitly.
// Returns the number of threads now in use.
int set_threads(int threads);

}  // namespace bakallm
