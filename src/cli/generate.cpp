// bakallm generate --model DIR (--prompt TEXT | --prompt-file F | --prompt-ids 1,2,3 | stdin) --max-new N
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "infer/generate.h"
#include "io/model_dir.h"
#include "util/error.h"

namespace bakallm::cli {

namespace {

struct GenerateArgs {
  std::string model, prompt, prompt_file, prompt_ids;
  std::string weights = "float32";
  bool json = false;
  int64_t batch = 1;
  GenerateOptions o;
};

// The prompt texts: --prompt-file (one per line), --prompt, or stdin.
std::vector<std::string> prompt_texts(const GenerateArgs& a, bool has_prompt) {
  std::vector<std::string> texts;
  if (!a.prompt_file.empty()) {
    std::ifstream in(a.prompt_file);
    for (std::string line; std::getline(in, line);) texts.push_back(line);
    if (texts.empty()) texts.push_back("");
  } else if (has_prompt) {
    texts.push_back(a.prompt);
  } else {
    std::ostringstream s;
    if (!::isatty(STDIN_FILENO)) s << std::cin.rdbuf();
    texts.push_back(s.str());
  }
  return texts;
}

}  // namespace

void add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate text (exact incremental decoding, constant memory)");
  cmd->add_option("--model", a->model, "model directory")->required();
  auto* p = cmd->add_option("--prompt", a->prompt, "prompt text (or stdin when no prompt is given)");
  auto* f = cmd->add_option("--prompt-file", a->prompt_file, "prompts, one per line")->check(CLI::ExistingFile);
  auto* i = cmd->add_option("--prompt-ids", a->prompt_ids, "prompt as token ids: 5,17,33 (BOS not added)");
  p->excludes(f)->excludes(i);
  f->excludes(i);
  cmd->add_option("--max-new", a->o.max_new, "tokens to generate")->check(kNonNegative);
  cmd->add_option("--temperature", a->o.sampling.temperature, "0: greedy");
  cmd->add_option("--top-k", a->o.sampling.top_k, "keep the k most likely (0: off)");
  cmd->add_option("--top-p", a->o.sampling.top_p, "nucleus mass in (0, 1]");
  cmd->add_option("--min-p", a->o.sampling.min_p, "drop tokens below min-p x the top probability");
  cmd->add_option("--repeat-penalty", a->o.sampling.repeat_penalty, "> 1 discourages repeats");
  cmd->add_option("--seed", a->o.sampling.seed, "sampling seed");
  cmd->add_option("--stop", a->o.stops, "stop at this string (repeatable)");
  cmd->add_option("--batch", a->batch, "prompts decoded together (of equal token length)")->check(kPositive);
  cmd->add_option("--weights", a->weights,
                  "the products' weights: float32 (exact), bfloat16 (half the bytes per token) or int8 (Q8_0, a quarter)")
      ->check(CLI::IsMember({"float32", "bfloat16", "int8"}));
  cmd->add_flag("--json", a->json, "print one JSON object per prompt");
  cmd->callback([a, p] {
    a->o.sampling.validate();
    auto loaded = load_model_dir(a->model);
    const int64_t vocab = loaded.config.vocab_size;
    use_weights(loaded.model, a->weights);
    std::unique_ptr<Tokenizer> tok;
    if (!loaded.tokenizer_path.empty()) {
      tok = std::make_unique<Tokenizer>(loaded.tokenizer_path);
      require_vocab_fits(tok->vocab_size(), vocab, loaded.tokenizer_path);
    }
    std::vector<std::vector<int64_t>> prompts;
    if (!a->prompt_ids.empty()) {
      prompts.push_back(parse_token_ids(a->prompt_ids, vocab, "--prompt-ids"));
    } else {
      if (!tok) throw Error(a->model + ": no tokenizer.model in the model directory: use --prompt-ids");
      for (const auto& t : prompt_texts(*a, p->count() > 0)) {
        if (invalid_utf8_offset(t) >= 0) throw Error("prompt is not valid UTF-8");
        const auto ids = tok->encode_document(t);  // an empty prompt starts from BOS
        prompts.emplace_back(ids.begin(), ids.end());
      }
    }
    if (prompts.size() == 1 && prompts[0].empty()) throw Error("--prompt-ids: no ids");
    const bool stream = !a->json && prompts.size() == 1 && tok;  // text to stdout as it comes
    TokenCallback print_text;
    if (stream)
      print_text = [](int64_t, int64_t, const std::string& text) {
        std::fwrite(text.data(), 1, text.size(), stdout);
        std::fflush(stdout);
        return true;
      };
    const auto results = generate_each(loaded.model, tok.get(), prompts, a->o, a->batch, print_text);
    if (stream) std::printf("\n");
    for (const auto& r : results) {
      if (a->json) {
        const double rows = static_cast<double>(std::min<size_t>(a->batch, prompts.size()));
        nlohmann::json j = {{"ids", r.ids},
                            {"text", r.text},
                            {"finish_reason", finish_reason_name(r.finish)},
                            {"prompt_tokens", r.prompt_tokens},
                            {"prefill_tokens_per_s", r.prompt_tokens / std::max(r.prefill_seconds, 1e-9)},
                            {"decode_tokens_per_s", r.ids.size() * rows / std::max(r.decode_seconds, 1e-9)},
                            {"decode_ms_per_token", 1000 * r.decode_seconds / std::max<size_t>(1, r.ids.size())}};
        std::cout << j.dump() << "\n";
      } else if (!stream) {
        if (tok) std::cout << r.text << "\n";
        else {
          for (size_t k = 0; k < r.ids.size(); ++k) std::cout << (k ? "," : "") << r.ids[k];
          std::cout << "\n";
        }
      }
    }
  });
}

}  // namespace bakallm::cli
