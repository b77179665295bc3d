// A one-line progress bar on stderr, redrawn at most every 100 ms when stderr
// is a terminal; elsewhere (logs, CI) a plain line at most every 10 s.
#pragma once
#include <string>

#include "util/clock.h"

namespace bakallm {

class ProgressBar {
 public:
  // TOTAL is the amount of work in the caller's unit (0 when unknown).
  explicit ProgressBar(double total = 0, bool enabled = true);
  ~ProgressBar();

  // DONE so far, and a status text shown after the bar.
  void update(double done, const std::string& status, bool force = false);
  void finish();  // ends the line
  double elapsed() const;

  // "1.5 MB", "12.3k" style helpers.
  static std::string bytes(double n);
  static std::string count(double n);
  static std::string duration(double seconds);

 private:
  double total_;
  bool enabled_, tty_, open_ = false;
  Clock::time_point start_, last_;
};

}  // namespace bakallm
