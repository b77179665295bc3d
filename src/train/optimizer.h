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

}  // namespace bakallm
