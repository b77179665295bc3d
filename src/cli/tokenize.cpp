// bakallm tokenize --tokenizer M --input FILES... --out DIR [--val-fraction F]
#include <cstdio>
#include <thread>

#include "cli/commands.h"
#include "data/tokenize_job.h"
#include "util/progress.h"

namespace bakallm::cli {

void add_tokenize(CLI::App& app) {
  struct Args {
    TokenizeOptions o;
    std::string separator = "eot", invalid_utf8 = "error";
  };
  auto args = std::make_shared<Args>();
  args->o.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  auto* cmd = app.add_subcommand("tokenize", "Turn text files into llm.c token shards (train_*.bin, val_*.bin)");
  cmd->add_option("--tokenizer", args->o.tokenizer, "SentencePiece .model")->required();
  cmd->add_option("--input", args->o.inputs, "corpus files (.txt, .jsonl, .zip, .zst/.zstd, .gz)")->required();
  cmd->add_option("--out", args->o.out_dir, "output directory")->required();
  cmd->add_option("--val-fraction", args->o.val_fraction, "share of documents held out for validation");
  cmd->add_option("--shard-tokens", args->o.shard_tokens, "tokens per shard at most (documents are not split)");
  cmd->add_option("--separator", args->separator, "document separator in .txt: eot (<|endoftext|> lines), blank, percent, file");
  cmd->add_option("--invalid-utf8", args->invalid_utf8, "a file that is not UTF-8: error, replace, latin1");
  cmd->add_option("--jsonl-field", args->o.corpus.jsonl_field, "field of each .jsonl object holding the text");
  cmd->add_option("--workers", args->o.threads, "encoding threads")->check(kPositive);
  cmd->callback([args] {
    args->o.corpus.separator = parse_separator(args->separator);
    args->o.corpus.invalid_utf8 = parse_invalid_utf8(args->invalid_utf8);
    const auto t = tokenize_corpus(args->o);
    std::printf("%lld files, %s of text, %lld documents (%lld validation): %lld train tokens in %zu shards, "
                "%lld validation tokens in %zu shards, %.1f s (%s tok/s) -> %s\n",
                (long long)t.files, ProgressBar::bytes(double(t.bytes)).c_str(), (long long)t.documents,
                (long long)t.val_documents, (long long)t.train_tokens, t.train_shards.size(), (long long)t.val_tokens,
                t.val_shards.size(), t.seconds,
                ProgressBar::count((t.train_tokens + t.val_tokens) / std::max(t.seconds, 1e-9)).c_str(),
                args->o.out_dir.c_str());
  });
}

}  // namespace bakallm::cli
