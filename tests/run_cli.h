// Runs the bakallm binary with ARGS (2 threads), or any shell command, and
// captures stdout and stderr together.
#pragma once
#include <array>
#include <cstdio>
#include <string>

#include "paths.h"

namespace bakallm::test {

struct CliRun {
  int status;
  std::string out;
};

inline CliRun run_command(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  CliRun r{0, ""};
  FILE* pipe = ::popen(cmd.c_str(), "r");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  r.status = ::pclose(pipe);
  return r;
}

inline CliRun run_cli(const std::string& args) { return run_command(binary() + " --threads 2 " + args); }

}  // namespace bakallm::test
