// The other ranks of a data-parallel job, over PyTorch's own distributed
// engine (c10d): a TCPStore for the rendezvous, a process group (Gloo on CPU;
// the backend is chosen in one place, process_group.cpp) for the collectives.
//
// Ranks find each other by torchrun's contract: RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT (as torchrun, SLURM wrappers and
// `bakallm launch` set them). Rank 0 hosts the store.
//
// Failures are one line naming the rank: a collective that fails or times out
// is turned into "rank R failed: ..." (a rank that reported its own error),
// "rank R stopped answering" (its heartbeat stopped: killed or hung), or
// "rank 0 ... is gone" (the store's host).
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "util/error.h"

namespace bakallm {

// torchrun's environment.
struct DistEnv {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;

  // From the environment; nullopt when WORLD_SIZE is unset (one process).
  // A malformed or inconsistent variable is an error naming it.
  static std::optional<DistEnv> from_environment();
};

// libtorch threads for this process: every core shared among LOCAL_WORLD_SIZE
// ranks of this machine (0 outside a data-parallel job: every core).
int threads_per_local_rank();

// A collective that failed: the message names the rank that stopped.
struct RankFailure : Error {
  using Error::Error;
};

struct CommOptions {
  std::string backend = "gloo";                  // CPU; "nccl" would be CUDA libtorch's
  std::chrono::milliseconds timeout{600'000};    // a collective, or the rendezvous, that takes longer fails
};

class Communicator {
 public:
  // Meets the other ranks at MASTER_ADDR:MASTER_PORT and checks that they
  // agree on the world size; errors name the address, the port or the rank.
  static std::unique_ptr<Communicator> connect(const DistEnv& env, const CommOptions& options = {});
  // connect() with torchrun's environment; nullptr outside a job of 2+ ranks.
  static std::unique_ptr<Communicator> from_environment(const CommOptions& options = {});
  ~Communicator();

  int rank() const;
  int size() const;

  // Sums TENSOR (contiguous, CPU) over every rank, in place. The async form
  // returns at once; call the returned function to wait for the sum.
  std::function<void()> allreduce_sum_async(torch::Tensor tensor);
  void allreduce_sum(torch::Tensor tensor);
  void broadcast(torch::Tensor tensor, int root);
  // Every rank's TENSOR (same shape everywhere) stacked along dim 0 in rank order.
  torch::Tensor allgather_rows(const torch::Tensor& tensor);

  // A rendezvous through the store that cannot hang on a rank that failed
  // before reaching it: each rank gives an error (empty: none) and a payload;
  // returns every rank's payload, or throws naming the first rank with an
  // error (this rank's own error is rethrown as it was given).
  std::vector<std::string> agree(const std::string& stage, const std::string& error, const std::string& payload);

  // This rank is stopping on ERROR: tell the others (they name this rank
  // and its reason), and drop the connections so they stop waiting.
  void report_failure(const std::string& error) noexcept;

  // Rethrows a failed collective as a RankFailure naming the rank to blame.
  [[noreturn]] void fail(const std::exception& cause);

 private:
  struct Impl;
  std::vector<std::string> agree_or_throw(const std::string& stage, const std::string& error, const std::string& payload);
  explicit Communicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bakallm
