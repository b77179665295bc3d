// One function per subcommand file: each adds its subcommand to the app.
#pragma once
#include <CLI/CLI.hpp>

namespace bakallm {
struct CommOptions;
}

namespace bakallm::cli {

void add_init(CLI::App& app);
void add_info(CLI::App& app);
void add_convert(CLI::App& app);
void add_eval(CLI::App& app);
void add_tokenizer(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_train(CLI::App& app);
void add_generate(CLI::App& app);
void add_bench(CLI::App& app);
void add_results(CLI::App& app);
void add_experiment(CLI::App& app);
void add_serve(CLI::App& app);
void add_launch(CLI::App& app);

// Checks of a number option whose failure reads "--steps: must be greater
// than 0, got 0". CLI11's PositiveNumber and NonNegativeNumber name a range
// up to DBL_MAX in theirs (309 digits), and PositiveNumber's starts it at 0.
extern const CLI::Validator kPositive;     // > 0
extern const CLI::Validator kNonNegative;  // >= 0

// --dist-timeout SECONDS into OPTIONS, on a command that can run as a rank of a data-parallel job.
void add_dist_timeout(CLI::App* cmd, CommOptions& options);

}  // namespace bakallm::cli
