// Gradients summed over ranks while the backward is still running, as DDP's
// reducer does: parameters are grouped, last first (the order the backward
// finishes them), into buckets (1 MiB for the first, then 25 MiB); a hook on
// each parameter's gradient accumulator marks it ready, and a bucket whose
// parameters are all ready is flattened and its allreduce started at once, in
// bucket order on every rank (Gloo matches collectives by order). finish()
// starts what is left, waits, and writes the sums back into each .grad.
//
// Written here rather than taken from c10d::Reducer (which libtorch exports):
// that one is driven by Python's DistributedDataParallel (bucket rebuilds,
// its Logger, division by the world size), and the trainer needs plain sums
// (it divides by the global token count itself) and the time it waits.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <torch/torch.h>

namespace bakallm {

class Communicator;

struct ReducerOptions {
  int64_t bucket_bytes = 25 << 20;       // DDP's bucket_cap_mb
  int64_t first_bucket_bytes = 1 << 20;  // small, so communication starts early
};

class GradientReducer {
 public:
  GradientReducer(std::vector<torch::Tensor> params, Communicator& comm, ReducerOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // The next backward's gradients are summed over ranks (the last micro-batch
  // of a step; earlier ones only accumulate, as under DDP's no_sync()).
  void arm();
  // After that backward: every gradient is the sum over ranks. Returns the
  // seconds spent waiting for communication (what the backward did not hide).
  double finish();
  // Seconds to sum every bucket once with nothing else running: the
  // communication a step needs, to compare with finish()'s wait.
  double measure_alone();

  int64_t bytes() const { return bytes_; }
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    std::vector<int64_t> offsets;
    torch::Tensor flat;          // [elements] float32
    int64_t pending = 0;         // parameters not ready yet
    std::function<void()> wait;  // set once started
  };
  void ready(size_t param);
  void start_ready_buckets();  // in order, as far as they are complete
  void start(Bucket& b);

  std::vector<torch::Tensor> params_;
  Communicator& comm_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  std::vector<bool> is_ready_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;  // kept alive: a leaf holds its accumulator weakly
  std::vector<uintptr_t> hook_keys_;
  size_t next_ = 0;
  bool armed_ = false;
  int64_t bytes_ = 0;
  std::mutex mutex_;
};

}  // namespace bakallm
