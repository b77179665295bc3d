#include "eval/results_db.h"

#include <cstdio>
#include <filesystem>
#include <memory>

#include "model/flops.h"
#include "util/error.h"
#include "util/fingerprint.h"
#include "util/sqlite.h"

namespace bakallm {

namespace {

constexpr const char* kResultsSchema = R"(
CREATE TABLE IF NOT EXISTS results (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  model_type TEXT NOT NULL,
  n_params INTEGER NOT NULL,
  n_embed_params INTEGER NOT NULL,
  benchmark TEXT NOT NULL,
  split TEXT NOT NULL,
  context INTEGER NOT NULL,
  nans INTEGER NOT NULL,
  loss REAL NOT NULL,
  ppl REAL NOT NULL,
  arch TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
  config_json TEXT NOT NULL,
  protocol TEXT NOT NULL,
  checkpoint_hash TEXT NOT NULL,
  tool_version TEXT NOT NULL,
  tokens INTEGER NOT NULL,
  documents INTEGER NOT NULL,
  window_loss REAL
);)";

}  // namespace

void insert_result(const SqliteDb& db, const ResultRow& r) {
  db.exec(kResultsSchema);
  SqliteStatement(db,
                  "INSERT INTO results (model_type, n_params, n_embed_params, benchmark, split, context, nans, loss,"
                  " ppl, arch, config_json, protocol, checkpoint_hash, tool_version, tokens, documents, window_loss)"
                  " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
      .text(r.model_type).integer(r.n_params).integer(r.n_embed_params).text(r.benchmark).text(r.split)
      .integer(r.context).integer(r.nans).real(r.loss).real(r.ppl).text(r.arch).text(r.config_json)
      .text(r.protocol).text(r.checkpoint_hash).text(r.tool_version).integer(r.tokens).integer(r.documents)
      .real(r.window_loss)
      .run();
}

void record_result(const std::string& path, const ResultRow& r) {
  SqliteDb db(path, true);
  db.transaction([&] { insert_result(db, r); });
}

std::vector<ResultRow> read_results(const std::string& path, const std::string& benchmark) {
  SqliteDb db(path, false);
  SqliteStatement q(db,
                    "SELECT model_type, n_params, n_embed_params, benchmark, split, context, nans, loss, ppl, arch,"
                    " created_at, protocol, checkpoint_hash, tool_version, tokens, documents, window_loss FROM results" +
                        std::string(benchmark.empty() ? "" : " WHERE benchmark = ?") + " ORDER BY loss ASC");
  if (!benchmark.empty()) q.text(benchmark);
  std::vector<ResultRow> rows;
  while (q.row()) {
    ResultRow r;
    r.model_type = q.column_text(0);
    r.n_params = q.column_int(1);
    r.n_embed_params = q.column_int(2);
    r.benchmark = q.column_text(3);
    r.split = q.column_text(4);
    r.context = q.column_int(5);
    r.nans = q.column_int(6);
    r.loss = q.column_real(7);
    r.ppl = q.column_real(8);
    r.arch = q.column_text(9);
    r.created_at = q.column_text(10);
    r.protocol = q.column_text(11);
    r.checkpoint_hash = q.column_text(12);
    r.tool_version = q.column_text(13);
    r.tokens = q.column_int(14);
    r.documents = q.column_int(15);
    r.window_loss = q.column_real(16);
    rows.push_back(r);
  }
  return rows;
}

std::string guess_split(const std::string& name) {
  if (name.find("valid") != std::string::npos || name.find("val") != std::string::npos) return "valid";
  if (name.find("test") != std::string::npos) return "test";
  if (name.find("train") != std::string::npos) return "train";
  return "unknown";
}

std::string architecture_text(const Config& c) {
  if (c.is_gpt_neox())
    return "GPT-NeoX D=" + std::to_string(c.hidden_dim) + " L=" + std::to_string(c.num_layers) +
           " H=" + std::to_string(c.num_heads) + " I=" + std::to_string(c.intermediate_dim) +
           " W=" + std::to_string(c.window_size);
  return "BakaLLM D=" + std::to_string(c.hidden_dim) + " L=" + std::to_string(c.num_layers) +
         " I=" + std::to_string(c.intermediate_dim) + " M=" + std::to_string(c.num_memory_tokens) +
         " W=" + std::to_string(c.window_size);
}

ResultRow evaluation_row(const std::string& model_dir, BakaLM& model, const EvalStats& stats,
                         const std::string& protocol, int64_t context, const std::string& first_input,
                         const std::string& benchmark, const std::string& split) {
  ResultRow r;
  r.model_type = model->config().is_gpt_neox() ? "gpt_neox" : "bakallm";
  const auto groups = parameter_groups(model);
  r.n_params = groups.back().second;
  r.n_embed_params = groups.front().second;
  const std::string first = std::filesystem::path(first_input).filename().string();
  r.benchmark = benchmark.empty() ? first : benchmark;
  r.split = split.empty() ? guess_split(first) : split;
  r.context = context;
  r.nans = stats.nonfinite;
  r.loss = stats.loss();
  r.ppl = stats.perplexity();
  r.window_loss = stats.window_loss();
  r.config_json = config_to_json(model->config()).dump();
  r.arch = architecture_text(model->config());
  r.protocol = protocol;
  r.checkpoint_hash = file_fingerprint(model_dir + "/model.safetensors");
  r.tool_version = std::string("bakallm ") + BAKALLM_VERSION;
  r.tokens = stats.tokens;
  r.documents = stats.documents;
  return r;
}

std::string format_results(const std::vector<ResultRow>& rows) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-9s %-26s %-6s %-8s %6s %9s %10s %10s %5s %-34s %s\n", "model", "benchmark",
                "split", "protocol", "ctx", "params", "loss", "ppl", "nans", "architecture", "created");
  out += line;
  for (const auto& r : rows) {
    std::snprintf(line, sizeof line, "%-9s %-26s %-6s %-8s %6lld %8.2fM %10.4f %10.2f %5lld %-34s %s\n",
                  r.model_type.c_str(), r.benchmark.c_str(), r.split.c_str(), r.protocol.c_str(),
                  (long long)r.context, r.n_params / 1e6, r.loss, r.ppl, (long long)r.nans, r.arch.c_str(),
                  r.created_at.c_str());
    out += line;
  }
  return out;
}

}  // namespace bakallm
