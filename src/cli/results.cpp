// bakallm results DB.sqlite3 [--benchmark NAME]
#include <iostream>

#include "cli/commands.h"
#include "eval/results_db.h"

namespace bakallm::cli {

void add_results(CLI::App& app) {
  struct Args {
    std::string db, benchmark;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("results", "Print a results database as a table sorted by loss");
  cmd->add_option("db", a->db, "SQLite database written by eval --record")->required();
  cmd->add_option("--benchmark", a->benchmark, "only this benchmark");
  cmd->callback([a] { std::cout << format_results(read_results(a->db, a->benchmark)); });
}

}  // namespace bakallm::cli
