#include "model/runtime.h"

#include <thread>

#include "util/error.h"

namespace bakallm {

Runtime make_runtime(const std::string& device, const std::string& dtype, int threads) {
  Runtime rt;
  if (device == "auto") {
    rt.device = torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  } else {
    try {
      rt.device = torch::Device(device);
    } catch (const c10::Error&) {
      throw Error("--device: unknown device '" + device + "' (cpu, cuda, cuda:N, auto)");
    }
    if (rt.device.is_cuda() && !torch::cuda::is_available())
      throw Error("--device: '" + device + "' requested but this libtorch has no CUDA device");
  }
  if (dtype == "float32" || dtype == "f32") rt.dtype = torch::kFloat;
  else if (dtype == "bfloat16" || dtype == "bf16") rt.dtype = torch::kBFloat16;
  else throw Error("--dtype: unknown dtype '" + dtype + "' (float32, bfloat16)");
  rt.threads = set_threads(threads);
  return rt;
}

int set_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
  return threads;
}

}  // namespace bakallm
