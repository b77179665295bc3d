#!/usr/bin/env bash
# On a machine with a CUDA PyTorch (no network): build bakallm against that
# PyTorch's libtorch, with the Debian -dev packages it needs unpacked from
# .deps/*.deb (`apt-get download` them on a Debian machine first), then run
# the golden-parity and decoder tests on the GPU. The golden files are read
# from .shared/golden (a copy of ../shared/golden, since only the checkout
# travels to such a machine).
# Usage: scripts/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/gpu_check}"; mkdir -p "$OUT"
D=/tmp/bakallm_deps; rm -rf "$D"; mkdir -p "$D"
for f in .deps/*.deb; do dpkg -x "$f" "$D"; done
L="$D/usr/lib/x86_64-linux-gnu"
sed -i "s#/usr#$D/usr#g" "$L"/pkgconfig/*.pc "$D"/usr/share/pkgconfig/*.pc 2>/dev/null
export PKG_CONFIG_PATH="$L/pkgconfig:$D/usr/share/pkgconfig"
export LD_LIBRARY_PATH="$L:${LD_LIBRARY_PATH:-}"
TORCH_CMAKE=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch;print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/env.txt"
build() {  # $1: C++ standard
  cmake -S . -B /tmp/b$1 -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_STANDARD=$1 \
    -DCMAKE_PREFIX_PATH="$TORCH_CMAKE;$D/usr" -DCMAKE_CXX_FLAGS="-I$D/usr/include" \
    -DBAKALLM_ONEDNN=OFF -DBAKALLM_BUILD_BENCH=OFF -DCMAKE_CUDA_ARCHITECTURES=90 > "$OUT/cmake$1.log" 2>&1 &&
  cmake --build /tmp/b$1 -j16 > "$OUT/build$1.log" 2>&1
}
B=""
if build 17; then B=/tmp/b17; else
  grep -m5 -B2 -A6 "error" "$OUT/cmake17.log" "$OUT/build17.log" | head -60
  if build 20; then B=/tmp/b20; else grep -m5 -B2 -A6 "error" "$OUT/cmake20.log" "$OUT/build20.log" | head -60; exit 1; fi
fi
echo "built in $B"
T="$B/tests/bakallm_tests"
BAKALLM_TEST_DEVICE=cuda BAKALLM_SHARED="$PWD/.shared" "$T" --gtest_filter='GoldenParity*:Decoder.*' 2>&1 | tee "$OUT/cuda_tests.txt" | tail -25
BAKALLM_SHARED="$PWD/.shared" "$T" --gtest_filter='GoldenParity*:Decoder.*:Ema*:Model*:FusedHeadLoss*:Generate*' 2>&1 | tail -4 | tee "$OUT/cpu_tests.txt"
echo "exit $?"
