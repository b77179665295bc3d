// bakallm eval --model DIR (--data SHARD... | --text FILE...) [--protocol stream|sliding --ctx N]
//              [--record DB.sqlite3] [--json]
#include <unistd.h>

#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "dist/communicator.h"
#include "eval/evaluator.h"
#include "eval/results_db.h"
#include "io/model_dir.h"
#include "util/error.h"
#include "util/progress.h"

namespace bakallm::cli {

namespace {

struct EvalArgs {
  std::string model, protocol = "stream", record, benchmark, split, separator = "eot", invalid_utf8 = "error";
  std::string bos = "auto", weights = "float32";
  std::vector<std::string> data, text;
  bool json = false;
  uint32_t bos_id = 1;
  CommOptions comm;  // ranks of a data-parallel job split the documents
  EvalOptions o;
};

}  // namespace

void add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "Mean next-token loss and perplexity (stream or sliding protocol)");
  cmd->add_option("--model", a->model, "model directory")->required();
  auto* d = cmd->add_option("--data", a->data, "token shards (llm.c format)");
  auto* t = cmd->add_option("--text", a->text, "text files, tokenized with the model's tokenizer (.txt, .jsonl, .zst, .gz, .zip)");
  d->excludes(t);
  cmd->add_option("--protocol", a->protocol,
                  "stream (state carried, default), sliding, or author (his bench_baka.py: mean over windows)")
      ->check(CLI::IsMember({"stream", "sliding", "author"}));
  cmd->add_option("--ctx", a->o.context,
                  "sliding, author: windows of N tokens, stride N/2 (author default: 655360)");
  cmd->add_option("--windows-per-call", a->o.windows_per_call, "stream: model windows per forward call")
      ->check(kPositive);
  cmd->add_option("--max-tokens", a->o.max_tokens, "stop after this many scored tokens");
  cmd->add_option("--bos-id", a->bos_id, "token id that starts a document in shards (default 1)");
  cmd->add_option("--bos", a->bos, "--text: start each document with BOS: auto (as the tokenizer does), add, none")
      ->check(CLI::IsMember({"auto", "add", "none"}));
  cmd->add_option("--separator", a->separator, "document separator in .txt: eot, blank, percent, file");
  cmd->add_option("--invalid-utf8", a->invalid_utf8, "error, replace, latin1");
  cmd->add_option("--record", a->record, "append one row to this SQLite results database");
  cmd->add_option("--benchmark", a->benchmark, "benchmark name for --record (default: first input's file name)");
  cmd->add_option("--split", a->split, "split name for --record (default: guessed from the name)");
  cmd->add_flag("--json", a->json, "print one JSON object");
  cmd->add_option("--weights", a->weights, "the products' weights: float32 (as trained), bfloat16 or int8 (Q8_0)")
      ->check(CLI::IsMember({"float32", "bfloat16", "int8"}));
  add_dist_timeout(cmd, a->comm);
  cmd->callback([a] {
    if (a->data.empty() && a->text.empty()) throw Error("eval: give --data SHARD... or --text FILE...");
    a->o.protocol = parse_protocol(a->protocol);
    if (a->o.protocol == EvalProtocol::kAuthor && a->o.context == 0) a->o.context = kAuthorContext;
    if (a->o.protocol != EvalProtocol::kStream && a->o.context < 2)
      throw Error("eval: --protocol " + a->protocol + " needs --ctx N (N >= 2)");
    const int64_t context = a->o.protocol == EvalProtocol::kStream ? 0 : a->o.context;  // 0: the whole document
    const auto comm = Communicator::from_environment(a->comm);
    if (comm) {
      a->o.rank = comm->rank();
      a->o.ranks = comm->size();
    }
    const bool speaks = !comm || comm->rank() == 0;  // rank 0 prints and records for the job
    auto loaded = load_model_dir(a->model);
    use_weights(loaded.model, a->weights);
    ProgressBar bar(0, speaks && ::isatty(STDERR_FILENO));
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
      CorpusOptions co;
      co.separator = parse_separator(a->separator);
      co.invalid_utf8 = parse_invalid_utf8(a->invalid_utf8);
      stats = evaluate_texts(loaded.model, tok, a->text, co, a->o, progress, parse_bos(a->bos));
    } else {
      stats = evaluate_shards(loaded.model, a->data, a->bos_id, a->o, progress);
    }
    bar.finish();
    if (comm) stats = sum_over_ranks(stats, *comm);
    if (!speaks) return;
    const std::string first_input = a->text.empty() ? a->data[0] : a->text[0];
    if (stats.tokens == 0)  // nothing to record: no loss exists
      throw file_error(first_input, "no token to score (every document is a single token)");
    if (!a->record.empty())
      record_result(a->record, evaluation_row(a->model, loaded.model, stats,
                                              a->protocol + (a->weights == "float32" ? "" : " (" + a->weights + " weights)"), context,
                                              first_input, a->benchmark, a->split));
    if (a->json) {
      auto j = stats.to_json();
      j["protocol"] = a->protocol;
      j["context"] = context;
      std::cout << j.dump() << "\n";
    } else {
      std::cout << stats.summary() << "  protocol " << a->protocol
                << (context ? " ctx " + std::to_string(context) : std::string()) << "  ("
                << static_cast<int64_t>(stats.tokens / std::max(stats.seconds, 1e-9)) << " tok/s)\n";
    }
  });
}

}  // namespace bakallm::cli
