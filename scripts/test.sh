#!/usr/bin/env bash
# The test command: set up (install + build), then run every test with CTest.
# Tests read ../shared (golden files, data) beside the checkout; those that
# need it and cannot find it say so when they skip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh Release
# Real clients the tests run (tests/js/package.json, pinned by
# package-lock.json): independent tokenizers for the BPE cross-check, the
# official OpenAI client and puppeteer-core for the server, which drives
# Debian's chromium (headless) through the playground page. Node and
# chromium from Debian when the machine has none.
need=()
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
(cd tests/js && npm ci --no-audit --no-fund --silent)
cd build
ctest --output-on-failure -j"$(nproc)" --timeout 600
