// `bakallm experiment`: train every variant x seed of a Plan, evaluate each,
// record the rows in OUT/results.sqlite3, and report them as the author
// compared his variants, but with the seed noise stated.
//
//   OUT/results.sqlite3   runs, evals, curves (and the author's `results` table)
//   OUT/runs/VARIANT/seedS/  each run's directory (metrics.jsonl, checkpoints)
//   OUT/report.md         the table;  OUT/curves.png  every variant's validation curve
//
// A run is done once its rows are in the database; a killed experiment
// started again skips those, and continues the interrupted run from its
// checkpoint.
#pragma once
#include <string>

#include "experiment/plan.h"

namespace bakallm {

// Trains and evaluates what OUT lacks, then writes the report. LOG gets one
// line per run started and finished. Returns false when stopped by a signal
// (what finished is recorded; run it again to continue).
bool run_experiment(const Plan& plan, const std::string& out_dir, std::ostream& log);

// From OUT/results.sqlite3 alone: writes OUT/report.md and OUT/curves.png
// (atomically) and returns the report's text.
std::string report_experiment(const std::string& out_dir);

}  // namespace bakallm
