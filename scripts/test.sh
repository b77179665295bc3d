#!/usr/bin/env bash
# The test command: set up (install + build), then run every test with CTest.
# Tests read ../shared (golden files, data) beside the checkout; those that
# need it and cannot find it say so when they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh Release
# Independent tokenizer implementations from npm for the BPE cross-check
# (tests/js/package.json, pinned by package-lock.json). Node from Debian when
# the machine has none.
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
(cd tests/js && npm ci --no-audit --no-fund --silent)
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 600
