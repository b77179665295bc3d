// bakallm launch --nproc N [--nnodes K --node-rank R --master-addr A --master-port P] -- train ARGS...
#include <unistd.h>

#include <climits>
#include <cstdlib>

#include "cli/commands.h"
#include "dist/communicator.h"
#include "dist/launch.h"
#include "util/error.h"

namespace bakallm::cli {

void add_dist_timeout(CLI::App* cmd, CommOptions& options) {
  cmd->add_option_function<double>(
         "--dist-timeout",
         [&options](double seconds) { options.timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)); },
         "data parallel: seconds a rank waits for the others (a rendezvous, a step) before it stops, naming the rank")
      ->check(kPositive);
}

void add_launch(CLI::App& app) {
  auto o = std::make_shared<LaunchOptions>();
  auto* cmd = app.add_subcommand("launch", "Run `train` or `eval` as N data-parallel ranks (torchrun's contract; docs/DISTRIBUTED.md)");
  cmd->add_option("--nproc", o->nproc, "ranks on this machine")->required()->check(kPositive);
  cmd->add_option("--nnodes", o->nnodes, "machines in the job")->check(kPositive);
  cmd->add_option("--node-rank", o->node_rank, "this machine's index, 0 .. nnodes-1")->check(kNonNegative);
  cmd->add_option("--master-addr", o->master_addr, "address of node 0, where rank 0 hosts the rendezvous");
  cmd->add_option("--master-port", o->master_port, "its port (0: any free one, one machine only)")->check(CLI::Range(0, 65535));
  cmd->add_option("--threads-per-rank", o->threads, "libtorch threads of each rank (default: cores / nproc)")
      ->check(kPositive);
  cmd->add_option("--grace", o->grace_seconds, "seconds the others get to stop after a rank fails");
  cmd->add_option("command", o->command, "-- train ARGS... or -- eval ARGS...")->required();
  cmd->callback([o] {
    char self[PATH_MAX];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) throw Error("launch: cannot find the bakallm binary (/proc/self/exe)");
    o->executable.assign(self, static_cast<size_t>(n));
    std::exit(launch(*o));
  });
}

}  // namespace bakallm::cli
