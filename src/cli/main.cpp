// bakallm: train, evaluate and run BakaLLM models. Parsing and messages live
// here and in one file per subcommand; the work lives in the library.
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.h"
#include "dist/communicator.h"
#include "model/runtime.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"bakallm: train, evaluate and run BakaLLM models"};
  app.set_version_flag("--version", std::string("bakallm ") + BAKALLM_VERSION);
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads for libtorch (0: every core)")->check(bakallm::cli::kNonNegative);
  // A rank of a data-parallel job shares the cores with the machine's other ranks.
  app.parse_complete_callback([&] { bakallm::set_threads(threads ? threads : bakallm::threads_per_local_rank()); });

  bakallm::cli::add_init(app);
  bakallm::cli::add_info(app);
  bakallm::cli::add_convert(app);
  bakallm::cli::add_eval(app);
  bakallm::cli::add_tokenizer(app);
  bakallm::cli::add_tokenize(app);
  bakallm::cli::add_train(app);
  bakallm::cli::add_generate(app);
  bakallm::cli::add_bench(app);
  bakallm::cli::add_results(app);
  bakallm::cli::add_experiment(app);
  bakallm::cli::add_serve(app);
  bakallm::cli::add_launch(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const bakallm::Error& e) {
    std::cerr << "bakallm: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "bakallm: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "bakallm: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
