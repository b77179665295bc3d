#include "eval/results_db.h"

#include <sqlite3.h>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "model/flops.h"
#include "util/error.h"
#include "util/fingerprint.h"

namespace bakallm {

namespace {

constexpr const char* kSchema = R"(
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

using Db = std::unique_ptr<sqlite3, decltype(&sqlite3_close)>;

Db open_db(const std::string& path, bool create) {
  sqlite3* raw = nullptr;
  const int flags = create ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
  if (!create && !std::filesystem::exists(path)) throw file_error(path, "no such results database");
  if (sqlite3_open_v2(path.c_str(), &raw, flags, nullptr) != SQLITE_OK) {
    const std::string msg = raw ? sqlite3_errmsg(raw) : "cannot open";
    sqlite3_close(raw);
    throw file_error(path, "cannot open results database: " + msg);
  }
  sqlite3_busy_timeout(raw, 30000);
  return Db(raw, sqlite3_close);
}

void exec(sqlite3* db, const char* sql, const std::string& path) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "error";
    sqlite3_free(err);
    throw file_error(path, msg);
  }
}

}  // namespace

void record_result(const std::string& path, const ResultRow& r) {
  auto db = open_db(path, true);
  exec(db.get(), "PRAGMA journal_mode=WAL;", path);
  exec(db.get(), "BEGIN IMMEDIATE;", path);
  try {
    exec(db.get(), kSchema, path);
    sqlite3_stmt* raw = nullptr;
    const char* sql =
        "INSERT INTO results (model_type, n_params, n_embed_params, benchmark, split, context, nans, loss, ppl, arch,"
        " config_json, protocol, checkpoint_hash, tool_version, tokens, documents, window_loss)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    if (sqlite3_prepare_v2(db.get(), sql, -1, &raw, nullptr) != SQLITE_OK)
      throw file_error(path, sqlite3_errmsg(db.get()));
    std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt(raw, sqlite3_finalize);
    int i = 0;
    auto text = [&](const std::string& s) { sqlite3_bind_text(raw, ++i, s.c_str(), -1, SQLITE_TRANSIENT); };
    auto integer = [&](int64_t v) { sqlite3_bind_int64(raw, ++i, v); };
    auto real = [&](double v) { sqlite3_bind_double(raw, ++i, v); };
    text(r.model_type), integer(r.n_params), integer(r.n_embed_params), text(r.benchmark), text(r.split);
    integer(r.context), integer(r.nans), real(r.loss), real(r.ppl), text(r.arch), text(r.config_json);
    text(r.protocol), text(r.checkpoint_hash), text(r.tool_version), integer(r.tokens), integer(r.documents);
    real(r.window_loss);
    if (sqlite3_step(raw) != SQLITE_DONE) throw file_error(path, std::string("insert failed: ") + sqlite3_errmsg(db.get()));
    exec(db.get(), "COMMIT;", path);
  } catch (...) {
    sqlite3_exec(db.get(), "ROLLBACK;", nullptr, nullptr, nullptr);
    throw;
  }
}

std::vector<ResultRow> read_results(const std::string& path, const std::string& benchmark) {
  auto db = open_db(path, false);
  const std::string sql =
      "SELECT model_type, n_params, n_embed_params, benchmark, split, context, nans, loss, ppl, arch, created_at,"
      " protocol, checkpoint_hash, tool_version, tokens, documents, window_loss FROM results" +
      std::string(benchmark.empty() ? "" : " WHERE benchmark = ?") + " ORDER BY loss ASC";
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &raw, nullptr) != SQLITE_OK)
    throw file_error(path, std::string("not a bakallm results database: ") + sqlite3_errmsg(db.get()));
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt(raw, sqlite3_finalize);
  if (!benchmark.empty()) sqlite3_bind_text(raw, 1, benchmark.c_str(), -1, SQLITE_TRANSIENT);
  std::vector<ResultRow> rows;
  auto str = [&](int c) { auto p = sqlite3_column_text(raw, c); return p ? std::string(reinterpret_cast<const char*>(p)) : ""; };
  while (sqlite3_step(raw) == SQLITE_ROW) {
    ResultRow r;
    r.model_type = str(0);
    r.n_params = sqlite3_column_int64(raw, 1);
    r.n_embed_params = sqlite3_column_int64(raw, 2);
    r.benchmark = str(3);
    r.split = str(4);
    r.context = sqlite3_column_int64(raw, 5);
    r.nans = sqlite3_column_int64(raw, 6);
    r.loss = sqlite3_column_double(raw, 7);
    r.ppl = sqlite3_column_double(raw, 8);
    r.arch = str(9);
    r.created_at = str(10);
    r.protocol = str(11);
    r.checkpoint_hash = str(12);
    r.tool_version = str(13);
    r.tokens = sqlite3_column_int64(raw, 14);
    r.documents = sqlite3_column_int64(raw, 15);
    r.window_loss = sqlite3_column_double(raw, 16);
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
