#include "util/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

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

}  // namespace bakallm
