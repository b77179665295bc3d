#include "util/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace bakallm {

ProgressBar::ProgressBar(double total, bool enabled)
    : total_(total), enabled_(enabled), tty_(::isatty(STDERR_FILENO)),
      start_(Clock::now()), last_(start_ - std::chrono::hours(1)) {}

ProgressBar::~ProgressBar() { finish(); }

double ProgressBar::elapsed() const { return seconds_since(start_); }

void ProgressBar::update(double done, const std::string& status, bool force) {
  if (!enabled_) return;
  const auto now = Clock::now();
  const auto every = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(10000);
  if (!force && now - last_ < every) return;
  last_ = now;
  std::string line;
  if (total_ > 0) {
    const double frac = std::min(1.0, std::max(0.0, done / total_));
    const int width = 24, filled = static_cast<int>(frac * width);
    line = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
    char pct[16];
    std::snprintf(pct, sizeof pct, "%5.1f%% ", 100 * frac);
    line += pct;
    const double t = elapsed();
    if (frac > 0 && frac < 1) line += "ETA " + duration(t / frac - t) + " ";
  }
  line += status;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    open_ = true;
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (open_) std::fprintf(stderr, "\n");
  open_ = false;
}

std::string ProgressBar::bytes(double n) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (n >= 1000 && u < 4) n /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", n, units[u]);
  return buf;
}

std::string ProgressBar::count(double n) {
  const char* units[] = {"", "k", "M", "G"};
  int u = 0;
  while (std::fabs(n) >= 1000 && u < 3) n /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f%s" : "%.0f%s", n, units[u]);
  return buf;
}

std::string ProgressBar::duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

}  // namespace bakallm
