// bakallm eval --model DIR (--data SHARD... | --text FILE...) [--protocol stream|sliding --ctx N]
//              [--record DB.sqlite3] [--json]
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "infer/evaluator.h"
#include "infer/results_db.h"
#include "io/model_dir.h"
#include "model/flops.h"
#include "util/error.h"
#include "util/fingerprint.h"
#include "util/progress.h"

namespace bakallm::cli {

namespace {

struct Args {
  std::string model, protocol = "stream", record, benchmark, split, separator = "eot", invalid_utf8 = "error";
  std::vector<std::string> data, text;
  bool json = false;
  uint32_t bos = 1;
  EvalOptions o;
};

// Documents of text files, tokenized with the model's tokenizer, BOS first.
std::function<bool(torch::Tensor&)> text_documents(const Args& a, const Tokenizer& tok) {
  auto docs = std::make_shared<std::vector<torch::Tensor>>();
  CorpusOptions co;
  co.separator = parse_separator(a.separator);
  co.invalid_utf8 = parse_invalid_utf8(a.invalid_utf8);
  for (const auto& f : a.text) {
    read_corpus(f, co, [&](std::string&& d) {
      const auto ids = tok.encode_document(d);
      docs->push_back(torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kLong));
    });
  }
  if (docs->empty()) throw Error(a.text[0] + ": no documents (empty or whitespace only)");
  auto i = std::make_shared<size_t>(0);
  return [docs, i](torch::Tensor& out) {
    if (*i >= docs->size()) return false;
    out = (*docs)[(*i)++];
    return true;
  };
}

std::string guess_split(const std::string& name) {
  if (name.find("valid") != std::string::npos || name.find("val") != std::string::npos) return "valid";
  if (name.find("test") != std::string::npos) return "test";
  if (name.find("train") != std::string::npos) return "train";
  return "unknown";
}

}  // namespace

void add_eval(CLI::App& app) {
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("eval", "Mean next-token loss and perplexity (stream or sliding protocol)");
  cmd->add_option("--model", a->model, "model directory")->required();
  auto* d = cmd->add_option("--data", a->data, "token shards (llm.c format)");
  auto* t = cmd->add_option("--text", a->text, "text files, tokenized with the model's tokenizer (.txt, .jsonl, .zst, .gz, .zip)");
  d->excludes(t);
  cmd->add_option("--protocol", a->protocol, "stream (state carried, default) or sliding")
      ->check(CLI::IsMember({"stream", "sliding"}));
  cmd->add_option("--ctx", a->o.context, "sliding: window of N tokens, stride N/2");
  cmd->add_option("--windows-per-call", a->o.windows_per_call, "stream: model windows per forward call")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-tokens", a->o.max_tokens, "stop after this many scored tokens");
  cmd->add_option("--bos", a->bos, "token id that starts a document in shards (default 1)");
  cmd->add_option("--separator", a->separator, "document separator in .txt: eot, blank, percent, file");
  cmd->add_option("--invalid-utf8", a->invalid_utf8, "error, replace, latin1");
  cmd->add_option("--record", a->record, "append one row to this SQLite results database");
  cmd->add_option("--benchmark", a->benchmark, "benchmark name for --record (default: first input's file name)");
  cmd->add_option("--split", a->split, "split name for --record (default: guessed from the name)");
  cmd->add_flag("--json", a->json, "print one JSON object");
  cmd->callback([a] {
    if (a->data.empty() && a->text.empty()) throw Error("eval: give --data SHARD... or --text FILE...");
    a->o.protocol = parse_protocol(a->protocol);
    if (a->o.protocol == EvalProtocol::kSliding && a->o.context < 2) throw Error("eval: --protocol sliding needs --ctx N (N >= 2)");
    auto loaded = load_model_dir(a->model);
    ProgressBar bar(0, ::isatty(STDERR_FILENO));
    auto progress = [&](const EvalStats& s) {
      bar.update(0, std::to_string(s.documents) + " docs, " + ProgressBar::count(double(s.tokens)) + " tokens, loss " +
                        std::to_string(s.loss()).substr(0, 6) + ", " +
                        ProgressBar::count(s.tokens / std::max(s.seconds, 1e-9)) + " tok/s");
    };
    EvalStats stats;
    if (!a->text.empty()) {
      if (loaded.tokenizer_path.empty()) throw Error(a->model + ": no tokenizer.model, needed for --text");
      Tokenizer tok(loaded.tokenizer_path);
      require_vocab_fits(tok.vocab_size(), loaded.config.vocab_size, loaded.tokenizer_path);
      stats = evaluate_documents(loaded.model, text_documents(*a, tok), a->o, progress);
    } else {
      stats = evaluate_shards(loaded.model, a->data, a->bos, a->o, progress);
    }
    bar.finish();
    const int64_t context = a->o.protocol == EvalProtocol::kSliding ? a->o.context : 0;  // 0: the whole document
    const double rate = stats.tokens / std::max(stats.seconds, 1e-9);
    if (!a->record.empty()) {
      ResultRow r;
      const auto groups = parameter_groups(loaded.model);
      r.n_params = groups.back().second;
      r.n_embed_params = groups.front().second;
      const std::string first = std::filesystem::path(a->text.empty() ? a->data[0] : a->text[0]).filename().string();
      r.benchmark = a->benchmark.empty() ? first : a->benchmark;
      r.split = a->split.empty() ? guess_split(first) : a->split;
      r.context = context;
      r.nans = stats.nonfinite;
      r.loss = stats.loss();
      r.ppl = stats.perplexity();
      r.window_loss = stats.window_loss();
      r.config_json = config_to_json(loaded.config).dump();
      r.arch = "BakaLLM D=" + std::to_string(loaded.config.hidden_dim) + " L=" + std::to_string(loaded.config.num_layers) +
               " I=" + std::to_string(loaded.config.intermediate_dim) + " M=" +
               std::to_string(loaded.config.num_memory_tokens) + " W=" + std::to_string(loaded.config.window_size);
      r.protocol = a->protocol;
      r.checkpoint_hash = file_fingerprint(a->model + "/model.safetensors");
      r.tool_version = std::string("bakallm ") + BAKALLM_VERSION;
      r.tokens = stats.tokens;
      r.documents = stats.documents;
      record_result(a->record, r);
    }
    if (a->json) {
      nlohmann::json j = {{"loss", stats.loss()},
                          {"ppl", stats.perplexity()},
                          {"window_loss", stats.window_loss()},
                          {"tokens", stats.tokens},
                          {"documents", stats.documents},
                          {"nonfinite", stats.nonfinite},
                          {"protocol", a->protocol},
                          {"context", context},
                          {"seconds", stats.seconds},
                          {"tokens_per_second", rate}};
      std::cout << j.dump() << "\n";
    } else {
      std::printf("loss %.6f  ppl %.4f  window-average loss %.6f  tokens %lld  documents %lld  nonfinite %lld  "
                  "protocol %s%s  (%.1f tok/s)\n",
                  stats.loss(), stats.perplexity(), stats.window_loss(), (long long)stats.tokens,
                  (long long)stats.documents, (long long)stats.nonfinite, a->protocol.c_str(),
                  context ? (" ctx " + std::to_string(context)).c_str() : "", rate);
    }
  });
}

void add_results(CLI::App& app) {
  struct ResultsArgs {
    std::string db, benchmark;
  };
  auto a = std::make_shared<ResultsArgs>();
  auto* cmd = app.add_subcommand("results", "Print a results database as a table sorted by loss");
  cmd->add_option("db", a->db, "SQLite database written by eval --record")->required();
  cmd->add_option("--benchmark", a->benchmark, "only this benchmark");
  cmd->callback([a] {
    const auto rows = read_results(a->db, a->benchmark);
    std::printf("%-9s %-26s %-6s %-8s %6s %9s %10s %10s %5s %-34s %s\n", "model", "benchmark", "split", "protocol", "ctx",
                "params", "loss", "ppl", "nans", "architecture", "created");
    for (const auto& r : rows)
      std::printf("%-9s %-26s %-6s %-8s %6lld %8.2fM %10.4f %10.2f %5lld %-34s %s\n", r.model_type.c_str(),
                  r.benchmark.c_str(), r.split.c_str(), r.protocol.c_str(), (long long)r.context, r.n_params / 1e6,
                  r.loss, r.ppl, (long long)r.nans, r.arch.c_str(), r.created_at.c_str());
  });
}

}  // namespace bakallm::cli
