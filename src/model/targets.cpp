#include "model/targets.h"

namespace bakallm {

torch::Tensor shifted_targets(const torch::Tensor& ids) {
  auto targets = torch::full_like(ids, kIgnoreIndex);
  const int64_t T = ids.size(1);
  if (T > 1) targets.narrow(1, 0, T - 1).copy_(ids.narrow(1, 1, T - 1));
  return targets;
}

}  // namespace bakallm
