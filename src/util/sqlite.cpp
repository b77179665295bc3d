#include "util/sqlite.h"

#include <filesystem>

#include "util/error.h"

namespace bakallm {

SqliteDb::SqliteDb(const std::string& path, bool create) : path_(path) {
  sqlite3* raw = nullptr;
  const int flags = create ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY;
  if (!create && !std::filesystem::exists(path)) throw file_error(path, "no such results database");
  if (sqlite3_open_v2(path.c_str(), &raw, flags, nullptr) != SQLITE_OK) {
    const std::string msg = raw ? sqlite3_errmsg(raw) : "cannot open";
    sqlite3_close(raw);
    throw file_error(path, "cannot open results database: " + msg);
  }
  db_.reset(raw);
  sqlite3_busy_timeout(raw, 30000);
  if (create) exec("PRAGMA journal_mode=WAL;");
}

void SqliteDb::exec(const std::string& sql) const {
  char* err = nullptr;
  if (sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    const std::string msg = err ? err : "error";
    sqlite3_free(err);
    throw file_error(path_, msg);
  }
}

void SqliteDb::transaction(const std::function<void()>& body) const {
  exec("BEGIN IMMEDIATE;");
  try {
    body();
    exec("COMMIT;");
  } catch (...) {
    sqlite3_exec(db_.get(), "ROLLBACK;", nullptr, nullptr, nullptr);
    throw;
  }
}

SqliteStatement::SqliteStatement(const SqliteDb& db, const std::string& sql) : db_(db) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &raw, nullptr) != SQLITE_OK)
    throw file_error(db.path(), std::string("not a bakallm results database: ") + sqlite3_errmsg(db.get()));
  stmt_.reset(raw);
}

SqliteStatement& SqliteStatement::text(const std::string& v) {
  sqlite3_bind_text(stmt_.get(), ++next_, v.c_str(), -1, SQLITE_TRANSIENT);
  return *this;
}
SqliteStatement& SqliteStatement::integer(int64_t v) {
  sqlite3_bind_int64(stmt_.get(), ++next_, v);
  return *this;
}
SqliteStatement& SqliteStatement::real(double v) {
  sqlite3_bind_double(stmt_.get(), ++next_, v);
  return *this;
}

void SqliteStatement::run() {
  while (row()) {
  }
}

bool SqliteStatement::row() {
  const int rc = sqlite3_step(stmt_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  throw file_error(db_.path(), std::string("database error: ") + sqlite3_errmsg(db_.get()));
}

std::string SqliteStatement::column_text(int c) const {
  const auto* p = sqlite3_column_text(stmt_.get(), c);
  return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
}

}  // namespace bakallm
