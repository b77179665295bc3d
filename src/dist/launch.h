// `bakallm launch`: torchrun's job on one machine. Starts --nproc ranks of a
// bakallm command with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and the machine's cores split
// between them; forwards Ctrl-C / SIGTERM to every rank; when a rank fails,
// gives the others a grace period to stop by themselves (they name the rank),
// then terminates them; exits non-zero if any rank failed.
#pragma once
#include <string>
#include <vector>

namespace bakallm {

struct LaunchOptions {
  int nproc = 1;                           // ranks on this machine
  int nnodes = 1, node_rank = 0;           // machines, and this one's index
  std::string master_addr = "127.0.0.1";   // where rank 0 (node 0) listens
  int master_port = 29500;                 // 0: a free port here (one machine only)
  int threads = 0;                         // libtorch threads per rank; 0: this machine's cores / nproc
  double grace_seconds = 10;               // after a rank fails, before the others are terminated
  std::string executable;                  // the bakallm binary
  std::vector<std::string> command;        // e.g. {"train", "--data", ...}
};

// Runs the job; returns its exit status (0: every rank succeeded).
int launch(const LaunchOptions& options);

}  // namespace bakallm
