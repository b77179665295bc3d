#include "dist/reducer.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "dist/communicator.h"
#include "util/clock.h"

namespace bakallm {

namespace {

// Runs after a parameter's gradient accumulator: .grad holds this backward's total.
struct ReadyHook : torch::autograd::FunctionPostHook {
  std::function<void()> on_ready;
  explicit ReadyHook(std::function<void()> f) : on_ready(std::move(f)) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list&) override {
    on_ready();
    return outputs;
  }
};

}  // namespace

GradientReducer::GradientReducer(std::vector<torch::Tensor> params, Communicator& comm, ReducerOptions options)
    : comm_(comm) {
  for (auto& p : params)
    if (p.requires_grad()) params_.push_back(p);
  bucket_of_.resize(params_.size());
  is_ready_.assign(params_.size(), false);
  // Last parameter first: the backward reaches the head before the embedding.
  int64_t cap = options.first_bucket_bytes, filled = 0;
  for (size_t j = params_.size(); j-- > 0;) {
    const int64_t size = params_[j].numel() * static_cast<int64_t>(sizeof(float));
    TORCH_CHECK(params_[j].scalar_type() == torch::kFloat, "GradientReducer: parameters must be float32");
    if (buckets_.empty() || (filled > 0 && filled + size > cap)) {
      if (!buckets_.empty()) cap = options.bucket_bytes;
      buckets_.emplace_back();
      filled = 0;
    }
    Bucket& b = buckets_.back();
    b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel());
    b.params.push_back(j);
    bucket_of_[j] = buckets_.size() - 1;
    filled += size;
    bytes_ += size;
  }
  for (auto& b : buckets_) {
    b.flat = torch::zeros({b.offsets.back() + params_[b.params.back()].numel()}, torch::kFloat);
    b.pending = static_cast<int64_t>(b.params.size());
  }
  for (size_t j = 0; j < params_.size(); ++j) {
    auto acc = torch::autograd::impl::grad_accumulator(params_[j]);
    hook_keys_.push_back(acc->add_post_hook(std::make_unique<ReadyHook>([this, j] { ready(j); })));
    accumulators_.push_back(std::move(acc));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t j = 0; j < accumulators_.size(); ++j) accumulators_[j]->del_post_hook(hook_keys_[j]);
}

void GradientReducer::arm() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = true;
}

void GradientReducer::ready(size_t j) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_ || is_ready_[j]) return;
  is_ready_[j] = true;
  --buckets_[bucket_of_[j]].pending;
  start_ready_buckets();
}

void GradientReducer::start_ready_buckets() {
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) start(buckets_[next_++]);
}

void GradientReducer::start(Bucket& b) {
  for (size_t i = 0; i < b.params.size(); ++i) {
    const auto& p = params_[b.params[i]];
    auto slot = b.flat.narrow(0, b.offsets[i], p.numel());
    if (p.grad().defined()) slot.copy_(p.grad().reshape({-1}));
    else slot.zero_();  // unused in this backward (on this rank)
  }
  b.wait = comm_.allreduce_sum_async(b.flat);
}

double GradientReducer::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = false;
  for (auto& b : buckets_) b.pending = 0;  // whatever never became ready is summed as it is
  start_ready_buckets();
  double waited = 0;
  for (auto& b : buckets_) {
    const auto t0 = Clock::now();
    b.wait();
    waited += seconds_since(t0);
    for (size_t i = 0; i < b.params.size(); ++i) {
      auto& p = params_[b.params[i]];
      auto sum = b.flat.narrow(0, b.offsets[i], p.numel()).view(p.sizes());
      if (p.grad().defined()) p.mutable_grad().copy_(sum);
      else p.mutable_grad() = sum.clone();
    }
    b.wait = nullptr;
    b.pending = static_cast<int64_t>(b.params.size());
  }
  is_ready_.assign(params_.size(), false);
  next_ = 0;
  return waited;
}

double GradientReducer::measure_alone() {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto t0 = Clock::now();
  std::vector<std::function<void()>> waits;
  for (auto& b : buckets_) waits.push_back(comm_.allreduce_sum_async(b.flat));
  for (auto& w : waits) w();
  return seconds_since(t0);
}

}  // namespace bakallm
