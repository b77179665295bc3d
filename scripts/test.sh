#!/usr/bin/env bash
# The test command: set up (install + build), then run every test with CTest.
# Tests read ../shared (golden files, data) beside the checkout; those that
# need it and cannot find it say so when they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh Release
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 600
