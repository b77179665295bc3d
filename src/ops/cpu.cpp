#include "ops/cpu.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

namespace bakallm {

namespace {

Isa from_environment() {
  const char* env = std::getenv("BAKALLM_ISA");
  const std::string v = env ? env : "";
  const Isa asked = v == "portable" ? Isa::kPortable : v == "avx2" ? Isa::kAvx2 : Isa::kAvx512;
  return std::min(asked, cpu_isa());
}

std::atomic<int> g_isa{-1};  // -1: not asked yet

}  // namespace

Isa kernel_isa() {
  int isa = g_isa.load(std::memory_order_relaxed);
  if (isa < 0) {
    isa = static_cast<int>(from_environment());
    g_isa.store(isa, std::memory_order_relaxed);
  }
  return static_cast<Isa>(isa);
}

void set_kernel_isa(Isa isa) { g_isa.store(static_cast<int>(std::min(isa, cpu_isa())), std::memory_order_relaxed); }

}  // namespace bakallm
