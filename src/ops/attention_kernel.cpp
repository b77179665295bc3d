#include "ops/attention_kernel.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "ops/cpu.h"
#include "util/error.h"

namespace bakallm {

namespace {
std::atomic<int> g_kernel{-1};  // an AttentionKernel once set or read from the environment
}  // namespace

AttentionKernel attention_kernel() {
  int k = g_kernel.load();
  if (k < 0) {
    const char* env = std::getenv("BAKALLM_ATTENTION");
    const std::string v = env ? env : "auto";
    if (v != "auto" && v != "dense" && v != "blocks" && v != "rows")
      throw Error("BAKALLM_ATTENTION must be auto, dense, blocks or rows, got '" + v + "'");
    k = static_cast<int>(v == "dense"    ? AttentionKernel::kDense
                         : v == "blocks" ? AttentionKernel::kBlocks
                         : v == "rows"   ? AttentionKernel::kRows
                                         : AttentionKernel::kAuto);
    g_kernel = k;
  }
  return static_cast<AttentionKernel>(k);
}

void set_attention_kernel(AttentionKernel kernel) { g_kernel = static_cast<int>(kernel); }

AttentionKernel choose_attention_kernel(const torch::Device& device, int64_t G, int64_t Tq, int64_t Tk,
                                        bool inference) {
  const bool rows_can = inference && device.is_cpu();
  switch (attention_kernel()) {
    case AttentionKernel::kDense: return AttentionKernel::kDense;
    case AttentionKernel::kBlocks: return AttentionKernel::kBlocks;
    case AttentionKernel::kRows: return rows_can ? AttentionKernel::kRows : AttentionKernel::kDense;
    case AttentionKernel::kAuto: break;
  }
  if (rows_can && Tq <= kRowAttentionRows && kernel_isa() != Isa::kPortable) return AttentionKernel::kRows;
  if (device.is_cpu() && Tq > 1 && G * Tq * Tk >= kBlockAttentionFrom) return AttentionKernel::kBlocks;
  return AttentionKernel::kDense;
}

}  // namespace bakallm
