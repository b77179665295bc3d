// Learning rate: linear warmup to `peak`, then cosine decay to `floor` at `total` steps.
#pragma once
#include <cmath>
#include <cstdint>

namespace bakallm {

struct LrSchedule {
  double peak = 6e-4, floor = 6e-5;
  int64_t warmup = 100, total = 1000;

  double at(int64_t step) const {  // step counts from 0
    if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
    if (step >= total) return floor;
    const double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
    return floor + 0.5 * (peak - floor) * (1.0 + std::cos(M_PI * progress));
  }
};

}  // namespace bakallm
