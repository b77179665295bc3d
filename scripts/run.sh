#!/usr/bin/env bash
# The main job: install and build, then create a tiny BakaLLM, show it, import
# the prototype-format checkpoint from tests/fixtures and evaluate it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh Release
B=build/src/bakallm
OUT="${BAKALLM_RUN_DIR:-runs/demo}"
mkdir -p "$OUT"
$B init --preset tiny --seed 0 --out "$OUT/tiny-init"
$B info "$OUT/tiny-init"
$B convert --from tests/fixtures/odd_shape.pt --config tests/fixtures/odd_shape.config.json --out "$OUT/imported"
$B info "$OUT/imported"
