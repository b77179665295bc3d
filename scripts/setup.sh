#!/usr/bin/env bash
# Installs what bakallm needs from Debian (only what is missing) and builds it
# into build/. Idempotent: a second run installs nothing and rebuilds only
# what changed. Usage: scripts/setup.sh [Release|Debug]
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config
  libtorch-dev libopenblas0-openmp        # libtorch; OpenBLAS keeps matmuls off the reference BLAS
  libdnnl-dev                             # oneDNN: the CPU matrix products (model/onednn.h)
  nlohmann-json3-dev libcli11-dev libzstd-dev zlib1g-dev libzip-dev
  libsentencepiece-dev sentencepiece libsqlite3-dev   # sentencepiece: spm_train
  libpcre2-dev libicu-dev                 # the byte-level BPE (tokenizer.json): pre-tokenizer, NFC
  libgtest-dev libbenchmark-dev
  libgoogle-perftools-dev                 # tcmalloc: no page-fault storm on big activations
  gnuplot-nox                             # loss curves, experiment curves
  libcpp-httplib-dev                      # bakallm serve (as llama.cpp's server)
  libgloo-dev                             # c10d's Gloo headers: data-parallel training (src/dist)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

BUILD_TYPE="${1:-Release}"
cmake -S . -B build -DCMAKE_BUILD_TYPE="$BUILD_TYPE" >/dev/null
cmake --build build -j"$(nproc)"
echo "setup: built build/src/bakallm"
