#include <string>

#include "cli/commands.h"

namespace bakallm::cli {

namespace {

// S as a number, compared by WANTED; else what went wrong, for CLI11 to put after the option's name.
template <typename Wanted>
CLI::Validator number_check(const char* description, const char* requirement, Wanted wanted) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "must be a number, got '" + s + "'";
        return wanted(v) ? std::string() : std::string(requirement) + ", got " + s;
      },
      description);
}

}  // namespace

const CLI::Validator kPositive = number_check("POSITIVE", "must be greater than 0", [](double v) { return v > 0; });
const CLI::Validator kNonNegative = number_check("NON-NEGATIVE", "must be 0 or more", [](double v) { return v >= 0; });

}  // namespace bakallm::cli
