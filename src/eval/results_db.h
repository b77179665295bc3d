// The author's results table, in SQLite: one row per evaluation run, so that
// variants and other models can be compared. Safe with several writers at
// once (WAL, busy timeout, one IMMEDIATE transaction per row).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/evaluator.h"
#include "model/baka_lm.h"

namespace bakallm {

struct ResultRow {
  std::string model_type = "bakallm";
  int64_t n_params = 0, n_embed_params = 0;
  std::string benchmark, split;
  int64_t context = 0;
  int64_t nans = 0;
  double loss = 0, ppl = 0, window_loss = 0;
  std::string arch;             // architecture text
  std::string config_json, protocol, checkpoint_hash, tool_version;
  int64_t tokens = 0, documents = 0;
  std::string created_at;       // filled by the database (UTC) when empty
};

void record_result(const std::string& db_path, const ResultRow& row);
class SqliteDb;
// The same row into DB inside the caller's transaction (with other tables' rows).
void insert_result(const SqliteDb& db, const ResultRow& row);

// The row for an evaluation of the model directory MODEL_DIR (its config and
// weights: parameter counts, architecture text, a fingerprint of
// model.safetensors) with STATS under PROTOCOL and CONTEXT (0: whole
// documents). BENCHMARK and SPLIT default to FIRST_INPUT's file name and the
// split guessed from it.
ResultRow evaluation_row(const std::string& model_dir, BakaLM& model, const EvalStats& stats,
                         const std::string& protocol, int64_t context, const std::string& first_input,
                         const std::string& benchmark = "", const std::string& split = "");
std::string guess_split(const std::string& name);      // "valid", "test", "train" or "unknown"
std::string architecture_text(const Config& config);   // "BakaLLM D=.. L=.. I=.. M=.. W=.."

// ROWS as the table `bakallm results` prints.
std::string format_results(const std::vector<ResultRow>& rows);
// Rows sorted by loss; BENCHMARK filters when not empty.
std::vector<ResultRow> read_results(const std::string& db_path, const std::string& benchmark = "");

}  // namespace bakallm
