// bakallm tokenizer train --input FILES... --vocab N --out tokenizer.model
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include "cli/commands.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "util/error.h"

namespace bakallm::cli {

void add_tokenizer(CLI::App& app) {
  struct Args {
    std::vector<std::string> inputs;
    std::string out, separator = "eot";
    int vocab = 32000;
  };
  auto args = std::make_shared<Args>();
  auto* group = app.add_subcommand("tokenizer", "SentencePiece tokenizer tools");
  group->require_subcommand(1);
  auto* cmd = group->add_subcommand("train", "Train a llama-style BPE SentencePiece model (byte fallback)");
  cmd->add_option("--input", args->inputs, "corpus files (.txt, .jsonl, .zip, .zst, .gz)")->required();
  cmd->add_option("--vocab", args->vocab, "vocabulary size")->check(CLI::Range(260, 1 << 20));
  cmd->add_option("--out", args->out, "the .model to write")->required();
  cmd->add_option("--separator", args->separator, "document separator in .txt: eot, blank, percent, file");
  cmd->callback([args] {
    // SentencePiece reads plain lines: flatten every input format into one temporary file.
    CorpusOptions corpus;
    corpus.separator = parse_separator(args->separator);
    const std::string flat = args->out + ".corpus.tmp." + std::to_string(::getpid());
    int64_t docs = 0;
    {
      std::ofstream out(flat);
      if (!out) throw file_error(flat, "cannot write");
      for (const auto& f : args->inputs)
        read_corpus(f, corpus, [&](std::string&& doc) {
          out << doc << (doc.empty() || doc.back() != '\n' ? "\n" : "");
          ++docs;
        });
    }
    try {
      if (docs == 0) throw Error("tokenizer train: the inputs hold no text");
      TokenizerTrainOptions o;
      o.inputs = {flat};
      o.vocab_size = args->vocab;
      o.out = args->out;
      train_tokenizer(o);
    } catch (...) {
      std::filesystem::remove(flat);
      throw;
    }
    std::filesystem::remove(flat);
    Tokenizer check(args->out);
    std::cout << "wrote " << args->out << " (" << check.vocab_size() << " pieces, from " << docs << " documents)\n";
  });
}

}  // namespace bakallm::cli
