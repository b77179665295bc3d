// bakallm experiment run PLAN.json --out DIR | bakallm experiment report DIR
#include <iostream>

#include "cli/commands.h"
#include "experiment/experiment.h"

namespace bakallm::cli {

void add_experiment(CLI::App& app) {
  struct Args {
    std::string plan, out, report_dir;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("experiment", "Train and compare variants x seeds (docs/EXPERIMENTS.md)");
  cmd->require_subcommand(1);
  auto* run = cmd->add_subcommand("run", "Train, evaluate and report every variant x seed of a plan (resumable)");
  run->add_option("plan", args->plan, "PLAN.json")->required();
  run->add_option("--out", args->out, "experiment directory (results.sqlite3, runs/, report.md, curves.png)")
      ->required();
  run->callback([args] {
    const Plan plan = load_plan(args->plan);
    if (!run_experiment(plan, args->out, std::cout)) std::exit(130);
  });
  auto* report = cmd->add_subcommand("report", "Redraw report.md and curves.png from DIR/results.sqlite3");
  report->add_option("dir", args->report_dir, "experiment directory")->required();
  report->callback([args] { std::cout << report_experiment(args->report_dir); });
}

}  // namespace bakallm::cli
