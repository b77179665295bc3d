// AdamW with decoupled weight decay on two parameter groups: matrices and
// embeddings decay; norms, biases, memory/separator tokens, EMA dampeners
// and negators do not.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model/baka_lm.h"

namespace bakallm {

struct OptimizerOptions {
  double lr = 6e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
};

// Whether parameter NAME (a spec name) is decayed.
bool decays(const std::string& name, const torch::Tensor& parameter);

std::unique_ptr<torch::optim::AdamW> make_optimizer(BakaLM& model, const OptimizerOptions& options);
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

// Before a step's first backward: every gradient cleared to none, as torch's
// zero_grad(set_to_none=True), so the first backward's gradient is taken as
// it is, where zeroed buffers cost a fill and an add over every weight.
void clear_grads(const std::vector<torch::Tensor>& params);
// After a step's backwards: zeros for any parameter this step's backwards
// did not reach but an earlier step did (the optimizer holds its state), so
// AdamW updates it as it did with the zeroed buffers (its moments decay, its
// weight decay applies). One no step ever reached stays without a gradient
// and AdamW passes it over, as before and as in PyTorch (the solidifier's
// gates over a past it never has).
void zero_missing_grads(torch::optim::Optimizer& optimizer);

}  // namespace bakallm
