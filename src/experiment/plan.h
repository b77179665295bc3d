// An experiment plan (PLAN.json): variants of one base config, each trained
// on the same data with the same token budget (or wall-clock minutes) for
// every seed, then evaluated on the same texts. Everything is checked when
// the plan is read, before anything trains. Format: docs/EXPERIMENTS.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/corpus.h"
#include "data/tokenizer.h"
#include "eval/evaluator.h"
#include "model/config.h"
#include "train/trainer.h"

namespace bakallm {

struct EvalSpec {
  std::string name;                // the benchmark's name in the tables
  std::vector<std::string> texts;  // text files (read_corpus)
  std::string protocol = "stream";
  EvalOptions options;             // protocol, context, max_tokens
  CorpusOptions corpus;
  BosPolicy bos = BosPolicy::kAuto;
};

struct Variant {
  std::string name;    // [A-Za-z0-9_.-]+, a directory name
  Config config;       // the base with the variant's overrides
  int64_t steps = 0;   // optimizer steps that spend the token budget
};

struct Plan {
  std::string path;                  // the plan file; relative paths in it are relative to its directory
  std::string data_dir;              // `bakallm tokenize` output
  std::string tokenizer;             // the data's tokenizer (for the evaluation texts)
  int64_t budget_tokens = 0;         // per variant and seed, or
  double budget_minutes = 0;         // wall-clock minutes per variant and seed
  std::vector<uint64_t> seeds;
  TrainOptions train;                // shared by every run (config, seed, run_dir set per run)
  std::vector<EvalSpec> evals;
  std::vector<Variant> variants;     // in the plan's order; the first is the reference
  nlohmann::json comparable;         // data, budget, train and eval as resolved: runs are comparable iff equal

  std::string budget_text() const;   // "300000 tokens" or "2 minutes"
};

// Reads and checks PATH; every problem is an Error naming the file and field.
Plan load_plan(const std::string& path);

}  // namespace bakallm
