// bakallm convert --from FILE --config CONFIG.json --out DIR
// FILE: the prototype's torch.save'd state_dict (zip) or a safetensors file.
#include <iostream>

#include "cli/commands.h"
#include "io/model_dir.h"
#include "io/torch_import.h"

namespace bakallm::cli {

void add_convert(CLI::App& app) {
  struct Args {
    std::string from, config, out, tokenizer, dtype = "float32";
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("convert", "Import a prototype checkpoint (.pt state_dict or .safetensors)");
  cmd->add_option("--from", args->from, "checkpoint file")->required();
  cmd->add_option("--config", args->config, "config.json describing the checkpoint")->required();
  cmd->add_option("--out", args->out, "model directory to write")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "SentencePiece .model to copy into the directory");
  cmd->add_option("--dtype", args->dtype, "dtype of the written weights")
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  cmd->callback([args] {
    const Config config = load_config(args->config);
    BakaLM model(config);
    const auto tensors = read_checkpoint(args->from);
    load_weights(model, tensors, args->from);
    save_model_dir(args->out, model, args->tokenizer,
                   args->dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat);
    std::cout << "converted " << args->from << " (" << tensors.size() << " tensors) -> " << args->out << "\n";
  });
}

}  // namespace bakallm::cli
