#include "model/runtime.h"

#include <thread>

namespace bakallm {

int set_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
  return threads;
}

}  // namespace bakallm
