#include "util/plot.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace fs = std::filesystem;

namespace bakallm {

std::string render_png(const std::string& body, const std::string& png_path, int width, int height) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) return "gnuplot not found (apt-get install gnuplot-nox)";
  const std::string tmp = png_path + ".tmp." + std::to_string(::getpid());
  FILE* gp = ::popen("gnuplot 2>/dev/null", "w");
  if (!gp) return "cannot start gnuplot";
  const std::string script = "set terminal png size " + std::to_string(width) + "," + std::to_string(height) +
                             "\nset output '" + tmp + "'\n" + body;
  std::fwrite(script.data(), 1, script.size(), gp);
  const int rc = ::pclose(gp);
  if (rc != 0 || !fs::exists(tmp)) {
    std::error_code ec;
    fs::remove(tmp, ec);
    return "gnuplot failed";
  }
  fs::rename(tmp, png_path);
  return "";
}

}  // namespace bakallm
