// bakallm info DIR [--json]: config, parameter counts by group, FLOPs per token.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "io/model_dir.h"
#include "model/flops.h"

namespace bakallm::cli {

void add_info(CLI::App& app) {
  struct Args {
    std::string dir;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("info", "Show a model directory's config, parameters and FLOPs");
  cmd->add_option("dir", args->dir, "model directory")->required();
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([args] {
    auto loaded = load_model_dir(args->dir);
    const auto groups = parameter_groups(loaded.model);
    const auto flops = flops_per_token(loaded.config);
    if (args->json) {
      nlohmann::json j;
      j["config"] = config_to_json(loaded.config);
      for (const auto& [name, n] : groups) j["parameters"][name] = n;
      j["flops_per_token"] = {{"forward", flops.forward_per_token},
                              {"training", flops.training_per_token},
                              {"attention_share", flops.attention_share}};
      j["tokenizer"] = loaded.tokenizer_path.empty() ? nlohmann::json(nullptr) : nlohmann::json(loaded.tokenizer_path);
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::cout << "model " << args->dir << "\nconfig\n";
    for (const auto& f : config_fields(loaded.config.model_type))
      std::printf("  %-24s %-24s %s\n", f.name, f.write(loaded.config).dump().c_str(), f.help);
    std::cout << "parameters\n";
    for (const auto& [name, n] : groups) std::printf("  %-18s %14lld  (%.2fM)\n", name.c_str(), (long long)n, n / 1e6);
    std::printf("FLOPs per token\n  forward  %.3f GFLOP (attention %.0f%%)\n  training %.3f GFLOP\n",
                flops.forward_per_token / 1e9, 100 * flops.attention_share, flops.training_per_token / 1e9);
    std::cout << "tokenizer " << (loaded.tokenizer_path.empty() ? "(none)" : loaded.tokenizer_path) << "\n";
  });
}

}  // namespace bakallm::cli
