// bakallm convert --from FILE --config CONFIG.json --out DIR
// FILE: the prototype's torch.save'd state_dict (zip) or a safetensors file.
// bakallm convert --from HF_DIR --out DIR: a Hugging Face checkpoint directory
// (config.json, model.safetensors or pytorch_model.bin, tokenizer.json), e.g.
// EleutherAI/pythia-14m.
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "io/model_dir.h"
#include "data/tokenizer.h"
#include "io/torch_import.h"
#include "util/error.h"

namespace bakallm::cli {

void add_convert(CLI::App& app) {
  struct Args {
    std::string from, config, out, tokenizer, dtype = "float32";
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("convert", "Import a prototype checkpoint (.pt state_dict or .safetensors)");
  cmd->add_option("--from", args->from, "checkpoint file, or a Hugging Face model directory")->required();
  cmd->add_option("--config", args->config, "config.json describing the checkpoint (default: FROM/config.json)");
  cmd->add_option("--out", args->out, "model directory to write")->required();
  cmd->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.model or tokenizer.json to copy into the directory (default: FROM's, if any)");
  cmd->add_option("--dtype", args->dtype, "dtype of the written weights")
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  cmd->callback([args] {
    std::string weights = args->from;
    if (std::filesystem::is_directory(args->from)) {
      weights = hugging_face_weights(args->from);
      if (args->config.empty()) args->config = args->from + "/config.json";
      if (args->tokenizer.empty()) args->tokenizer = find_tokenizer(args->from);
    }
    if (args->config.empty()) throw Error(args->from + ": is a file: --config CONFIG.json is needed with it");
    const Config config = load_config(args->config);
    BakaLM model(config);
    const auto tensors = read_checkpoint(weights);
    load_weights(model, tensors, weights);
    save_model_dir(args->out, model, args->tokenizer,
                   args->dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat);
    std::cout << "converted " << weights << " (" << tensors.size() << " tensors) -> " << args->out << "\n";
  });
}

}  // namespace bakallm::cli
