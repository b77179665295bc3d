// bakallm eval --model DIR --data SHARD... [--json]
// Mean next-token loss and perplexity; each document is one stream.
#include <cstdio>
#include <iostream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "infer/evaluator.h"
#include "io/model_dir.h"

namespace bakallm::cli {

void add_eval(CLI::App& app) {
  struct Args {
    std::string model;
    std::vector<std::string> data;
    bool json = false;
    uint32_t bos = 1;
    int64_t windows_per_call = 4;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("eval", "Mean next-token loss and perplexity on token shards");
  cmd->add_option("--model", args->model, "model directory")->required();
  cmd->add_option("--data", args->data, "token shards (llm.c format)")->required();
  cmd->add_option("--bos", args->bos, "token id that starts a document (default 1)");
  cmd->add_option("--windows-per-call", args->windows_per_call, "windows fed to the model per call")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([args] {
    auto loaded = load_model_dir(args->model);
    const bool tty = ::isatty(STDERR_FILENO);
    auto progress = [&](const EvalStats& s) {
      if (tty)
        std::fprintf(stderr, "\r%lld documents, %lld tokens, loss %.4f, %.0f tok/s   ", (long long)s.documents,
                     (long long)s.tokens, s.loss(), s.tokens / std::max(s.seconds, 1e-9));
    };
    const auto stats = evaluate_shards(loaded.model, args->data, args->bos, args->windows_per_call, progress);
    if (tty) std::fprintf(stderr, "\n");
    if (args->json) {
      nlohmann::json j = {{"loss", stats.loss()},         {"ppl", stats.perplexity()},
                          {"tokens", stats.tokens},       {"documents", stats.documents},
                          {"nonfinite", stats.nonfinite}, {"seconds", stats.seconds},
                          {"tokens_per_second", stats.tokens / std::max(stats.seconds, 1e-9)}};
      std::cout << j.dump() << "\n";
    } else {
      std::printf("loss %.6f  ppl %.4f  tokens %lld  documents %lld  nonfinite %lld  (%.1f tok/s)\n", stats.loss(),
                  stats.perplexity(), (long long)stats.tokens, (long long)stats.documents,
                  (long long)stats.nonfinite, stats.tokens / std::max(stats.seconds, 1e-9));
    }
  });
}

}  // namespace bakallm::cli
