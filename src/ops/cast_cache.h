// A tensor cast to another dtype once and kept while the tensor is unchanged
// (the same storage at the same version), as torch.autocast keeps the casts
// of weights: a float32 weight's bfloat16 copy serves every window of a
// training step (and every product of an evaluation) and is made again after
// the optimizer step, a load or a copy changes the weight (a write that
// bypasses the version counter, as a collective into the storage, must come
// before the first cast: the trainer's broadcast does). The copy holds no
// graph; the products that use it send their gradient to the weight itself
// (matmul_nt's B_COMPUTE).
#pragma once
#include <torch/torch.h>

#include <mutex>

namespace bakallm {

class CastCache {
 public:
  // T in DTYPE: T itself when it is already, else the kept copy (made now if
  // T changed since). Never modified in place: a new copy replaces the old.
  torch::Tensor get(const torch::Tensor& t, torch::ScalarType dtype) {
    if (!t.defined() || t.scalar_type() == dtype) return t;
    std::lock_guard<std::mutex> lock(mutex_);  // one model may serve several threads
    if (!holds_locked(t, dtype)) {
      torch::NoGradGuard no_grad;
      cast_ = t.detach().to(dtype);
      source_ = t;
      data_ = t.data_ptr();
      version_ = static_cast<int64_t>(t._version());
    }
    return cast_;
  }

  // Whether the kept copy is T's, unchanged, in DTYPE (get would not cast).
  bool holds(const torch::Tensor& t, torch::ScalarType dtype) {
    std::lock_guard<std::mutex> lock(mutex_);
    return holds_locked(t, dtype);
  }

 private:
  bool holds_locked(const torch::Tensor& t, torch::ScalarType dtype) const {
    return cast_.defined() && cast_.scalar_type() == dtype && source_.unsafeGetTensorImpl() == t.unsafeGetTensorImpl() &&
           data_ == t.data_ptr() && version_ == static_cast<int64_t>(t._version()) && cast_.sizes() == t.sizes() &&
           cast_.device() == t.device();
  }

  std::mutex mutex_;
  torch::Tensor source_, cast_;  // the tensor cast, and its copy in the cached dtype
  const void* data_ = nullptr;   // source_'s storage and version when cast
  int64_t version_ = -1;
};

}  // namespace bakallm
