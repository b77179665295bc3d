#include "util/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <regex>

#include "util/error.h"

namespace fs = std::filesystem;

namespace bakallm {

namespace {

std::string temp_name(const std::string& path) {
  return path + ".tmp." + std::to_string(::getpid());
}

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

void write_file_atomically(const std::string& path,
                           const std::function<void(std::ostream&)>& write) {
  const std::string tmp = temp_name(path);
  try {
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) throw file_error(path, "cannot open for writing");
      write(out);
      out.flush();
      if (!out) throw file_error(path, "write failed (disk full?)");
    }
    fsync_path(tmp);
    fs::rename(tmp, path);
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

void write_dir_atomically(const std::string& dir,
                          const std::function<void(const std::string&)>& fill) {
  const std::string tmp = temp_name(dir);
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    fill(tmp);
    const std::string old = dir + ".old." + std::to_string(::getpid());
    const bool had_old = fs::exists(dir);
    if (had_old) fs::rename(dir, old);
    fs::rename(tmp, dir);
    if (had_old) fs::remove_all(old, ec);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw file_error(dir, std::string("cannot write directory: ") + e.code().message());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

std::string clean_dir(const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d;
}

std::vector<std::string> foreign_entries(const std::string& dir,
                                         const std::function<bool(const std::string&, bool)>& mine) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    if (!mine(name, e.is_directory(ec))) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void require_only_own_files(const std::string& dir, const std::function<bool(const std::string&, bool)>& mine,
                            const std::string& noun, const std::string& hint) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) throw file_error(dir, "exists and is not a directory");
  const auto foreign = foreign_entries(dir, mine);
  if (foreign.empty()) return;
  std::string list;
  for (size_t i = 0; i < foreign.size() && i < 3; ++i) list += (i ? ", " : "") + foreign[i];
  if (foreign.size() > 3) list += ", ... " + std::to_string(foreign.size()) + " in all";
  throw file_error(dir, "holds files " + noun + " did not write (" + list + "): " + hint);
}

namespace {
const std::regex& temporary_pattern() {
  static const std::regex re(R"(^(.+)\.(tmp|old|pruned)\.([0-9]+)$)");
  return re;
}
}  // namespace

bool is_temporary_name(const std::string& name) { return std::regex_match(name, temporary_pattern()); }

int remove_orphans(const std::string& dir, const std::string& prefix) {
  int removed = 0;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  std::vector<fs::path> gone;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const auto name = e.path().filename().string();
    if (!std::regex_match(name, m, temporary_pattern())) continue;
    if (!prefix.empty() && m[1].str() != prefix) continue;
    const auto pid = static_cast<pid_t>(std::stoll(m[3].str()));
    const bool alive = pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
    if (!alive) gone.push_back(e.path());
  }
  for (const auto& p : gone) {
    fs::remove_all(p, ec);
    if (!ec) ++removed;
  }
  return removed;
}

}  // namespace bakallm
