// The instruction sets of the decoding kernels' loops (ops/simd.h) that this
// CPU runs, for tests that check each of them.
#pragma once
#include <vector>

#include "ops/cpu.h"

namespace bakallm::test {

// Fastest first: on a CPU with AVX-512 all three, with AVX2 two.
inline std::vector<Isa> isas() {
  std::vector<Isa> all;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2, Isa::kPortable})
    if (isa <= cpu_isa()) all.push_back(isa);
  return all;
}

// The kernels run ISA's loops while this lives, then what they ran before.
class KernelIsa {
 public:
  explicit KernelIsa(Isa isa) : before_(kernel_isa()) { set_kernel_isa(isa); }
  ~KernelIsa() { set_kernel_isa(before_); }
  KernelIsa(const KernelIsa&) = delete;
  KernelIsa& operator=(const KernelIsa&) = delete;

 private:
  Isa before_;
};

}  // namespace bakallm::test
