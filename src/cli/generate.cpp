// bakallm generate --model DIR (--prompt TEXT | --prompt-file F | --prompt-ids 1,2,3 | stdin) --max-new N
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "infer/decoder.h"
#include "infer/sampler.h"
#include "io/model_dir.h"
#include "util/error.h"

namespace bakallm::cli {

namespace {

struct Args {
  std::string model, prompt, prompt_file, prompt_ids;
  std::string weights = "float32";
  bool has_prompt = false, json = false;
  int64_t max_new = 128, batch = 1;
  SamplingOptions sampling;
  std::vector<std::string> stops;
};

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<int64_t> parse_ids(const std::string& s, int64_t vocab) {
  std::vector<int64_t> ids;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      ids.push_back(v);
    } catch (const std::exception&) {
      throw Error("--prompt-ids: '" + item + "' is not a token id");
    }
    if (ids.back() < 0 || ids.back() >= vocab)
      throw Error("--prompt-ids: id " + item + " is outside the vocabulary of " + std::to_string(vocab));
  }
  return ids;
}

struct Result {
  std::vector<int64_t> ids;
  std::string text;
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prompt_tokens = 0;
};

// Generates for same-length PROMPTS at once; STREAM prints text as it comes (one prompt).
std::vector<Result> run_batch(BakaLM& model, const Tokenizer* tok, const std::vector<std::vector<int64_t>>& prompts,
                              const Args& a, bool stream) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  auto ids = torch::empty({B, static_cast<int64_t>(prompts[0].size())}, torch::kLong);
  for (int64_t b = 0; b < B; ++b)
    for (size_t t = 0; t < prompts[b].size(); ++t) ids[b][t] = prompts[b][t];
  std::vector<Result> results(B);
  std::vector<Sampler> samplers;
  for (int64_t b = 0; b < B; ++b) {
    auto s = a.sampling;
    s.seed += static_cast<uint64_t>(b);
    samplers.emplace_back(s);
  }
  std::vector<std::vector<int64_t>> history = prompts;
  std::vector<bool> done(B, false);
  Decoder dec(model, B);
  auto t0 = Clock::now();
  auto logits = dec.feed(ids);  // [B, V]
  const double prefill = since(t0);
  t0 = Clock::now();
  std::string printed;
  for (int64_t step = 0; step < a.max_new; ++step) {
    auto next = torch::empty({B, 1}, torch::kLong);
    bool all_done = true;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t id = done[b] ? 0 : samplers[b].sample(logits[b], history[b]);
      next[b][0] = id;
      if (done[b]) continue;
      history[b].push_back(id);
      results[b].ids.push_back(id);
      if (tok && id == static_cast<int64_t>(tok->eos_id())) done[b] = true;
      if (tok) {
        std::vector<uint32_t> gen(results[b].ids.begin(), results[b].ids.end());
        results[b].text = tok->decode(gen);
        for (const auto& s : a.stops) {
          const auto at = results[b].text.find(s);
          if (at != std::string::npos) {
            results[b].text.resize(at);
            done[b] = true;
          }
        }
        if (stream && results[b].text.size() > printed.size() &&
            results[b].text.compare(0, printed.size(), printed) == 0) {
          std::fwrite(results[b].text.data() + printed.size(), 1, results[b].text.size() - printed.size(), stdout);
          std::fflush(stdout);
          printed = results[b].text;
        }
      }
      all_done = all_done && done[b];
    }
    if (all_done) break;
    logits = dec.feed(next);
  }
  const double decode = since(t0);
  for (auto& r : results) {
    r.prefill_seconds = prefill;
    r.decode_seconds = decode;
    r.prompt_tokens = ids.size(1);
  }
  if (stream) std::printf("\n");
  return results;
}

}  // namespace

void add_generate(CLI::App& app) {
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("generate", "Generate text (exact incremental decoding, constant memory)");
  cmd->add_option("--model", a->model, "model directory")->required();
  auto* p = cmd->add_option("--prompt", a->prompt, "prompt text (or stdin when no prompt is given)");
  auto* f = cmd->add_option("--prompt-file", a->prompt_file, "prompts, one per line")->check(CLI::ExistingFile);
  auto* i = cmd->add_option("--prompt-ids", a->prompt_ids, "prompt as token ids: 5,17,33 (BOS not added)");
  p->excludes(f)->excludes(i);
  f->excludes(i);
  cmd->add_option("--max-new", a->max_new, "tokens to generate")->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature", a->sampling.temperature, "0: greedy");
  cmd->add_option("--top-k", a->sampling.top_k, "keep the k most likely (0: off)");
  cmd->add_option("--top-p", a->sampling.top_p, "nucleus mass in (0, 1]");
  cmd->add_option("--min-p", a->sampling.min_p, "drop tokens below min-p x the top probability");
  cmd->add_option("--repeat-penalty", a->sampling.repeat_penalty, "> 1 discourages repeats");
  cmd->add_option("--seed", a->sampling.seed, "sampling seed");
  cmd->add_option("--stop", a->stops, "stop at this string (repeatable)");
  cmd->add_option("--batch", a->batch, "prompts decoded together (of equal token length)")->check(CLI::PositiveNumber);
  cmd->add_option("--weights", a->weights,
                  "dtype of the products' weights: float32 (exact) or bfloat16 (half the bytes per token)")
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  cmd->add_flag("--json", a->json, "print one JSON object per prompt");
  cmd->callback([a, p] {
    a->has_prompt = p->count() > 0;
    a->sampling.validate();
    auto loaded = load_model_dir(a->model);
    const int64_t vocab = loaded.config.vocab_size;
    if (a->weights == "bfloat16") loaded.model->store_linear_weights(torch::kBFloat16);
    std::unique_ptr<Tokenizer> tok;
    if (!loaded.tokenizer_path.empty()) {
      tok = std::make_unique<Tokenizer>(loaded.tokenizer_path);
      require_vocab_fits(tok->vocab_size(), vocab, loaded.tokenizer_path);
    }
    std::vector<std::vector<int64_t>> prompts;
    if (!a->prompt_ids.empty()) {
      prompts.push_back(parse_ids(a->prompt_ids, vocab));
    } else {
      std::vector<std::string> texts;
      if (!a->prompt_file.empty()) {
        std::ifstream in(a->prompt_file);
        for (std::string line; std::getline(in, line);) texts.push_back(line);
        if (texts.empty()) texts.push_back("");
      } else if (a->has_prompt) {
        texts.push_back(a->prompt);
      } else {
        std::ostringstream s;
        if (!::isatty(STDIN_FILENO)) s << std::cin.rdbuf();
        texts.push_back(s.str());
      }
      if (!tok) throw Error(a->model + ": no tokenizer.model in the model directory: use --prompt-ids");
      for (const auto& t : texts) {
        if (invalid_utf8_offset(t) >= 0) throw Error("prompt is not valid UTF-8");
        const auto ids = tok->encode_document(t);  // an empty prompt starts from BOS
        prompts.emplace_back(ids.begin(), ids.end());
      }
    }
    if (prompts.size() == 1 && prompts[0].empty()) throw Error("--prompt-ids: no ids");
    const bool stream = !a->json && prompts.size() == 1 && tok;
    for (size_t start = 0; start < prompts.size();) {
      // The next run of up to --batch prompts of the same length.
      size_t end = start + 1;
      while (end < prompts.size() && end - start < static_cast<size_t>(a->batch) &&
             prompts[end].size() == prompts[start].size())
        ++end;
      std::vector<std::vector<int64_t>> group(prompts.begin() + start, prompts.begin() + end);
      auto results = run_batch(loaded.model, tok.get(), group, *a, stream);
      for (const auto& r : results) {
        if (a->json) {
          nlohmann::json j = {{"ids", r.ids},
                              {"text", r.text},
                              {"prompt_tokens", r.prompt_tokens},
                              {"prefill_tokens_per_s", r.prompt_tokens / std::max(r.prefill_seconds, 1e-9)},
                              {"decode_tokens_per_s", r.ids.size() * group.size() / std::max(r.decode_seconds, 1e-9)},
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
      start = end;
    }
  });
}

}  // namespace bakallm::cli
