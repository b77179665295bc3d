#!/usr/bin/env bash
# The main job, offline on a fresh Debian machine: install and build, then
# train a small BakaLLM from raw text and print a sample.
#
#   scripts/run.sh                 # Debian's `fortunes` texts (installed if missing)
#   scripts/run.sh FILE...         # your own .txt/.jsonl/.zip/.zst/.gz files
#
# Environment: RUN_DIR (default runs/main), MINUTES of training (default 3),
# SEPARATOR for .txt documents (default: percent for fortunes, else eot).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh Release
B=build/src/bakallm
RUN_DIR="${RUN_DIR:-runs/main}"
MINUTES="${MINUTES:-3}"
mkdir -p "$RUN_DIR"

if (($#)); then
  INPUTS=("$@")
  SEPARATOR="${SEPARATOR:-eot}"
else
  if [ ! -d /usr/share/games/fortunes ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get install -y -qq --no-install-recommends fortunes >/dev/null
  fi
  INPUTS=()
  for f in /usr/share/games/fortunes/*; do
    case "$f" in *.dat|*.u8) ;; *) [ -f "$f" ] && INPUTS+=("$f") ;; esac
  done
  SEPARATOR="${SEPARATOR:-percent}"
fi

echo "== tokenizer: SentencePiece BPE, 4096 pieces, from ${#INPUTS[@]} files"
$B tokenizer train --input "${INPUTS[@]}" --separator "$SEPARATOR" --vocab 4096 --out "$RUN_DIR/tokenizer.model"
echo "== tokenize"
$B tokenize --tokenizer "$RUN_DIR/tokenizer.model" --input "${INPUTS[@]}" --separator "$SEPARATOR" \
  --invalid-utf8 replace --val-fraction 0.05 --out "$RUN_DIR/data"
cat > "$RUN_DIR/config.json" <<JSON
{"hidden_dim": 128, "num_layers": 4, "num_memory_tokens": 8, "intermediate_dim": 384,
 "window_size": 128, "vocab_size": 4096, "attn_dropout": 0.0, "detach_every": 2}
JSON
echo "== train for $MINUTES minutes (Ctrl-C checkpoints and stops; running this again continues the run)"
RESUME=()
[ -d "$RUN_DIR/run/checkpoints" ] && RESUME=(--resume)
$B train --config "$RUN_DIR/config.json" --data "$RUN_DIR/data" --out "$RUN_DIR/run" "${RESUME[@]}" \
  --steps 2000 --batch 8 --lr 2e-3 --warmup 50 --eval-every 100 --checkpoint-every 200 \
  --max-minutes "$MINUTES" --prompt "${PROMPT:-The}" --sample-tokens 64
echo "== loss curve: $RUN_DIR/run/loss.png; metrics: $RUN_DIR/run/metrics.jsonl"
