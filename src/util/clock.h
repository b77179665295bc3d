// Wall-clock seconds, one way everywhere: steady_clock, as a double.
#pragma once
#include <chrono>

namespace bakallm {

using Clock = std::chrono::steady_clock;

// Seconds from T to now.
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace bakallm
