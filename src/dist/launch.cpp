#include "dist/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <iostream>
#include <thread>

#include "util/clock.h"
#include "util/error.h"

namespace bakallm {

namespace {

std::atomic<int> g_signal{0};
void on_signal(int sig) { g_signal = sig; }

// A port nobody listens on now (the store binds it a moment later).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error("launch: cannot open a socket to find a free port");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw Error("launch: cannot find a free port on 127.0.0.1");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string describe(int status) {
  if (WIFSIGNALED(status)) return std::string("was killed by signal ") + std::to_string(WTERMSIG(status)) + " (" +
                                  strsignal(WTERMSIG(status)) + ")";
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

struct Rank {
  int global = 0;
  pid_t pid = -1;
  bool running = false;
};

}  // namespace

int launch(const LaunchOptions& o) {
  if (o.nproc < 1 || o.nnodes < 1 || o.node_rank < 0 || o.node_rank >= o.nnodes)
    throw Error("launch: need --nproc >= 1, --nnodes >= 1 and 0 <= --node-rank < --nnodes");
  if (o.command.empty() || (o.command[0] != "train" && o.command[0] != "eval"))
    throw Error("launch: runs `train ...` or `eval ...` as ranks (after --), got '" +
                (o.command.empty() ? std::string() : o.command[0]) + "'");
  if (o.master_port == 0 && o.nnodes > 1) throw Error("launch: --master-port 0 (any free port) works on one machine only");
  const int port = o.master_port == 0 ? free_port() : o.master_port;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const int threads = o.threads > 0 ? o.threads : std::max(1, cores / o.nproc);
  const int world = o.nproc * o.nnodes;

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  std::vector<Rank> ranks(o.nproc);
  for (int local = 0; local < o.nproc; ++local) {
    Rank& r = ranks[local];
    r.global = o.node_rank * o.nproc + local;
    std::vector<std::string> args = {o.executable, "--threads", std::to_string(threads)};
    args.insert(args.end(), o.command.begin(), o.command.end());
    const pid_t pid = ::fork();
    if (pid < 0) throw Error("launch: fork failed: " + std::string(std::strerror(errno)));
    if (pid == 0) {
      ::setpgid(0, 0);  // a terminal's Ctrl-C reaches the launcher only; it forwards it once
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // and a launcher killed outright takes its ranks along
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::setenv("RANK", std::to_string(r.global).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(o.nproc).c_str(), 1);
      ::setenv("GROUP_RANK", std::to_string(o.node_rank).c_str(), 1);
      ::setenv("MASTER_ADDR", o.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(o.executable.c_str(), argv.data());
      std::cerr << "launch: cannot run " << o.executable << ": " << std::strerror(errno) << "\n";
      ::_exit(127);
    }
    r.pid = pid;
    r.running = true;
  }
  std::cerr << "launch: " << o.nproc << " rank(s) of " << world << " on this machine, " << threads
            << " thread(s) each, rendezvous " << o.master_addr << ":" << port << "\n";

  int status_out = 0;
  bool failed = false;
  Clock::time_point failed_at{}, terminated_at{};
  bool terminated = false, killed = false;
  auto signal_all = [&](int sig) {
    for (auto& r : ranks)
      if (r.running) {
        ::kill(r.pid, sig);
        if (sig == SIGTERM) ::kill(r.pid, SIGCONT);  // a stopped rank must run to take it
      }
  };
  while (std::any_of(ranks.begin(), ranks.end(), [](const Rank& r) { return r.running; })) {
    if (const int sig = g_signal.exchange(0)) signal_all(sig);  // Ctrl-C, SIGTERM: every rank checkpoints and stops
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (auto& r : ranks) {
        if (r.pid != pid) continue;
        r.running = false;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && !failed) {
          failed = true;
          failed_at = Clock::now();
          status_out = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
          std::cerr << "launch: rank " << r.global << " " << describe(status) << "; the others stop by themselves or in "
                    << o.grace_seconds << " s\n";
        }
      }
      continue;
    }
    const auto now = Clock::now();
    if (failed && !terminated && now - failed_at > std::chrono::duration<double>(o.grace_seconds)) {
      signal_all(SIGTERM);
      terminated = true;
      terminated_at = now;
    }
    if (terminated && !killed && now - terminated_at > std::chrono::seconds(5)) {
      signal_all(SIGKILL);
      killed = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return status_out;
}

}  // namespace bakallm
