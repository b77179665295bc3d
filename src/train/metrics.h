// RUN/metrics.jsonl (one JSON object per line) and the loss-curve PNG drawn
// from it by gnuplot.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace bakallm {

class MetricsLog {
 public:
  // Opens PATH for appending; lines with "step" > KEEP_UP_TO are dropped first
  // (a resumed run rewrites what came after its checkpoint).
  MetricsLog(const std::string& path, int64_t keep_up_to);
  void write(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

// Draws train loss (and validation loss where present) against step into
// PNG. Returns an empty string, or why it could not (gnuplot missing, ...).
std::string plot_losses(const std::string& metrics_path, const std::string& png_path);

}  // namespace bakallm
