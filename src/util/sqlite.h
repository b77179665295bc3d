// A thin RAII layer over SQLite for bakallm's result databases: open (WAL,
// busy timeout), exec, a statement with positional binds, and one IMMEDIATE
// transaction that rolls back on any exception. Errors name the file.
#pragma once
#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace bakallm {

class SqliteDb {
 public:
  // CREATE: read-write, created if absent (WAL); else read-only, and an
  // absent file is an Error.
  SqliteDb(const std::string& path, bool create);
  void exec(const std::string& sql) const;
  // Runs BODY inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK if it throws).
  void transaction(const std::function<void()>& body) const;
  sqlite3* get() const { return db_.get(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> db_{nullptr, sqlite3_close};
};

class SqliteStatement {
 public:
  SqliteStatement(const SqliteDb& db, const std::string& sql);  // Error when SQL does not prepare
  SqliteStatement& text(const std::string& v);   // binds the next ?
  SqliteStatement& integer(int64_t v);
  SqliteStatement& real(double v);
  void run();                                    // steps to the end (an INSERT, UPDATE)
  bool row();                                    // steps; false after the last row
  std::string column_text(int c) const;
  int64_t column_int(int c) const { return sqlite3_column_int64(stmt_.get(), c); }
  double column_real(int c) const { return sqlite3_column_double(stmt_.get(), c); }

 private:
  const SqliteDb& db_;
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt_{nullptr, sqlite3_finalize};
  int next_ = 0;
};

}  // namespace bakallm
