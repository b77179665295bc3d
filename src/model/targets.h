// Next-token prediction targets: what every loss in bakallm is computed
// against (training batches, evaluation, tests).
#pragma once
#include <torch/torch.h>

namespace bakallm {

// A target that predicts nothing (padding, a document's last token).
constexpr int64_t kIgnoreIndex = -100;

// TARGETS for next-token prediction on IDS [B, T]: ids shifted left, the last
// position ignored.                                                    -> [B, T]
torch::Tensor shifted_targets(const torch::Tensor& ids);

}  // namespace bakallm
