#include "train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include <unistd.h>

#include "io/model_dir.h"
#include "io/safetensors.h"
#include "util/atomic_file.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace bakallm {

namespace {

// N for a directory named exactly "step_N" (digits only), else -1: the
// temporaries of a killed writer ("step_34.tmp.123") are no checkpoints.
int64_t step_of(const fs::path& p) {
  const auto name = p.filename().string();
  if (name.rfind("step_", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return std::stoll(name.substr(5));
}

}  // namespace

void save_checkpoint(const std::string& dir, BakaLM& model, torch::optim::Optimizer& optimizer,
                     const TrainProgress& progress, const State& stream, const std::string& tokenizer) {
  fs::create_directories(fs::path(dir).parent_path());
  write_dir_atomically(dir, [&](const std::string& tmp) {
    write_model_files(tmp, model, tokenizer);
    // Serialised in memory, written like every other file: libtorch's own
    // file writer throws from a destructor when the disk is full (abort).
    std::ostringstream optimizer_bytes;
    torch::save(optimizer, optimizer_bytes);
    write_file_atomically(tmp + "/optimizer.pt", [&](std::ostream& out) { out << optimizer_bytes.str(); });
    write_safetensors(tmp + "/stream.safetensors", stream.tensors());
    torch::Tensor rng;
    {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      rng = gen.get_state();
    }
    write_safetensors(tmp + "/rng.safetensors", {{"cpu", rng}});
    nlohmann::json j = {{"step", progress.step},
                        {"tokens", progress.tokens},
                        {"seconds", progress.seconds},
                        {"loader", progress.loader},
                        {"world_size", progress.world_size},
                        {"stream_seen", stream.seen},
                        {"stream_windows", stream.windows}};
    write_file_atomically(tmp + "/train_state.json", [&](std::ostream& out) { out << j.dump(2) << "\n"; });
  });
}

TrainProgress load_checkpoint(const std::string& dir, BakaLM& model, torch::optim::Optimizer& optimizer,
                              State& stream) {
  const std::string weights = dir + "/model.safetensors";
  load_weights(model, read_safetensors(weights).tensors, weights);
  try {
    torch::load(optimizer, dir + "/optimizer.pt");
  } catch (const c10::Error& e) {
    throw file_error(dir + "/optimizer.pt", "cannot load optimizer state");
  }
  const std::string state_path = dir + "/train_state.json";
  std::ifstream in(state_path);
  if (!in) throw file_error(state_path, "missing");
  nlohmann::json j;
  TrainProgress p;
  try {
    in >> j;
    p.step = j.at("step").get<int64_t>();
    p.tokens = j.at("tokens").get<int64_t>();
    p.seconds = j.at("seconds").get<double>();
    p.loader = j.at("loader");
    p.world_size = j.value("world_size", int64_t{1});
  } catch (const nlohmann::json::exception& e) {
    throw file_error(state_path, std::string("not a bakallm training state: ") + e.what());
  }
  stream = State::from_tensors(read_safetensors(dir + "/stream.safetensors").tensors, model->config().num_layers,
                              dir + "/stream.safetensors");
  stream.seen = j.value("stream_seen", int64_t{0});
  stream.windows = j.value("stream_windows", int64_t{0});
  const std::string rng_path = dir + "/rng.safetensors";
  const auto rng_tensors = read_safetensors(rng_path).tensors;
  if (!rng_tensors.count("cpu")) throw file_error(rng_path, "holds no 'cpu' generator state");
  try {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng_tensors.at("cpu"));
  } catch (const c10::Error& e) {
    throw file_error(rng_path, "not a CPU generator state");
  }
  return p;
}

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(root)) return {};
  for (const auto& e : fs::directory_iterator(root)) {
    const int64_t step = step_of(e.path());
    if (step >= 0 && e.is_directory() && fs::exists(e.path() / "train_state.json")) found.emplace_back(step, e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

void prune_checkpoints(const std::string& run_dir, int keep) {
  auto all = list_checkpoints(run_dir);
  for (size_t i = 0; i + keep < all.size(); ++i) {
    // Renamed first, so a kill while deleting leaves no half checkpoint that
    // looks whole; the next start removes the rest (remove_orphans).
    const std::string doomed = all[i] + ".pruned." + std::to_string(::getpid());
    fs::rename(all[i], doomed);
    std::error_code ec;
    fs::remove_all(doomed, ec);
  }
}

int remove_checkpoint_orphans(const std::string& run_dir) {
  return remove_orphans((fs::path(run_dir) / "checkpoints").string()) + remove_orphans(run_dir);
}

}  // namespace bakallm
