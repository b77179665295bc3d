// Starting the bakallm binary in the background, waiting for it, and what
// it leaves behind: for tests that kill it or limit it.
#pragma once
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "files.h"
#include "paths.h"
#include "util/atomic_file.h"

namespace bakallm::test {

namespace fs = std::filesystem;

// Starts `bakallm ARGS` in the background (output into LOG); FILE_LIMIT > 0
// caps every file it writes at that many bytes (EFBIG, as on a full disk);
// ENV ("NAME=value ...") is added to its environment.
inline pid_t start(const std::string& args, const std::string& log, long file_limit = 0, const std::string& env = "") {
  const pid_t pid = fork();
  if (pid == 0) {
    if (file_limit > 0) {
      ::signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails instead of killing
      rlimit r{static_cast<rlim_t>(file_limit), static_cast<rlim_t>(file_limit)};
      setrlimit(RLIMIT_FSIZE, &r);
    }
    const std::string cmd = "exec env " + env + " " + binary() + " --threads 1 " + args + " >" + log + " 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

inline int wait_for(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

// Every temporary or half-deleted entry under DIR (recursively).
inline std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (is_temporary_name(e.path().filename().string())) out.push_back(e.path().string());
  return out;
}

}  // namespace bakallm::test
