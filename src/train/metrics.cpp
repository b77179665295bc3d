#include "train/metrics.h"

#include <filesystem>
#include <sstream>
#include <vector>

#include "util/atomic_file.h"
#include "util/error.h"
#include "util/plot.h"

namespace fs = std::filesystem;

namespace bakallm {

MetricsLog::MetricsLog(const std::string& path, int64_t keep_up_to) : path_(path) {
  if (fs::exists(path)) {
    std::vector<std::string> kept;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", int64_t{0}) <= keep_up_to) kept.push_back(line);
      } catch (const nlohmann::json::exception&) {  // a torn last line from a crash
      }
    }
    write_file_atomically(path, [&](std::ostream& out) {
      for (const auto& l : kept) out << l << "\n";
    });
  }
  out_.open(path, std::ios::app);
  if (!out_) throw file_error(path, "cannot open for appending");
}

void MetricsLog::write(const nlohmann::json& record) {
  out_ << record.dump() << "\n";
  out_.flush();
  if (!out_) throw file_error(path_, "write failed (disk full?)");
}

std::string plot_losses(const std::string& metrics_path, const std::string& png_path) {
  std::ifstream in(metrics_path);
  std::ostringstream train, val;
  for (std::string line; std::getline(in, line);) {
    try {
      auto j = nlohmann::json::parse(line);
      if (j.contains("loss")) train << j["step"] << " " << j["loss"] << "\n";
      if (j.contains("val_loss")) val << j["step"] << " " << j["val_loss"] << "\n";
    } catch (const nlohmann::json::exception&) {
    }
  }
  if (train.str().empty()) return "no training loss logged yet";
  std::ostringstream script;
  script << "set title 'BakaLLM training'\nset xlabel 'step'\nset ylabel 'loss (nats/token)'\nset grid\n"
         << "$train << EOD\n" << train.str() << "EOD\n";
  const bool has_val = !val.str().empty();
  if (has_val) script << "$val << EOD\n" << val.str() << "EOD\n";
  script << "plot $train using 1:2 with lines lw 1 lc rgb '#7f7fbf' title 'train'";
  if (has_val) script << ", $val using 1:2 with linespoints lw 2 pt 7 lc rgb '#d62728' title 'validation'";
  script << "\n";
  return render_png(script.str(), png_path);
}

}  // namespace bakallm
