// Whether an op's backward will be wanted, asked before choosing its path:
// the fused ops skip their autograd node (and what it saves) when it is not.
#pragma once
#include <torch/torch.h>

namespace bakallm {

// Grad mode is on and a defined one of TS requires a gradient.
template <class... Tensors>
bool wants_grad(const Tensors&... ts) {
  return torch::GradMode::is_enabled() && ((ts.defined() && ts.requires_grad()) || ...);
}

}  // namespace bakallm
