// bakallm init (--preset NAME | --config FILE) --seed N --out DIR [--tokenizer FILE]
#include <iostream>

#include "cli/commands.h"
#include "io/model_dir.h"
#include "model/baka_lm.h"
#include "util/error.h"

namespace bakallm::cli {

void add_init(CLI::App& app) {
  struct Args {
    std::string preset, config, out, tokenizer;
    uint64_t seed = 0;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("init", "Create a model directory with the prototype's initial weights");
  auto* preset_opt = cmd->add_option("--preset", args->preset, "tiny or base");
  auto* config_opt = cmd->add_option("--config", args->config, "config.json to start from")->check(CLI::ExistingFile);
  preset_opt->excludes(config_opt);
  cmd->add_option("--seed", args->seed, "random seed")->required();
  cmd->add_option("--out", args->out, "model directory to write")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "SentencePiece .model to copy into the directory")
      ->check(CLI::ExistingFile);
  cmd->callback([args] {
    if (args->preset.empty() && args->config.empty()) throw Error("init: give --preset NAME or --config FILE");
    const Config config = args->preset.empty() ? load_config(args->config) : preset(args->preset);
    BakaLM model = make_model(config, args->seed);
    save_model_dir(args->out, model, args->tokenizer);
    std::cout << "wrote " << args->out << " (seed " << args->seed << ")\n";
  });
}

}  // namespace bakallm::cli
