#include "train/optimizer.h"

#include "util/strings.h"

namespace bakallm {

bool decays(const std::string& name, const torch::Tensor& p) {
  if (p.dim() < 2) return false;  // biases, norm weights, negators
  for (const char* no_decay : {"memory_tokens", "sep_tokens", "dampeners"})
    if (ends_with(name, no_decay)) return false;
  return true;
}

std::unique_ptr<torch::optim::AdamW> make_optimizer(BakaLM& model, const OptimizerOptions& o) {
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& p : model->named_parameters()) (decays(p.key(), p.value()) ? decay : no_decay).push_back(p.value());
  auto base = torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps);
  auto with_decay = std::make_unique<torch::optim::AdamWOptions>(base);
  with_decay->weight_decay(o.weight_decay);
  auto without = std::make_unique<torch::optim::AdamWOptions>(base);
  without->weight_decay(0.0);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::move(with_decay));
  groups.emplace_back(no_decay, std::move(without));
  return std::make_unique<torch::optim::AdamW>(groups, base.weight_decay(0.0));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

void clear_grads(const std::vector<torch::Tensor>& params) {
  for (const auto& p : params) p.mutable_grad().reset();
}

void zero_missing_grads(torch::optim::Optimizer& optimizer) {
  const auto& state = optimizer.state();  // keyed as torch's optimizers key it: the parameter's TensorImpl
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params())
      if (!p.grad().defined() && state.count(c10::guts::to_string(p.unsafeGetTensorImpl())))
        p.mutable_grad() = torch::zeros_like(p);
}

}  // namespace bakallm
