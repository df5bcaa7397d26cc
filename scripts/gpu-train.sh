#!/usr/bin/env bash
# One prepared run on a lent GPU machine (DEVELOPERS.md: 15 minutes, one command of at most
# 10 minutes, 64 MiB in, at most 8 files of 16 MiB back through $OUT). Trains the bundled model's
# architecture (configs/emoji32-gpu.json: 32 px, batch 256, the emoji32-cpu recipe) for MINUTES
# (default 6) from the bundled weights, and writes to $OUT: bench.txt, train.txt (the log's tail),
# log.csv, loss.png, samples.png and ema.safetensors (f32, 8 MB: continue with
# `glide train --init`). Here, first: scripts/gpu-prepare.sh; then the device tool with
#   carry [".device"], command `bash scripts/gpu-train.sh`, timeout_s 600.
# Rehearsal on this CPU (flex, ~2 minutes): scripts/gpu-prepare.sh --cpu && SMOKE=1 bash scripts/gpu-train.sh
# RECIPES=1: the model card's recipe table (scripts/recipes.sh) instead, every recipe from scratch
# for IMAGES (default 100k) images or MINUTES / (number of recipes) each, whichever comes first;
# writes recipes.md, recipes.txt and recipes-logs.tar.xz. Rehearsal: RECIPES=1 SMOKE=1 IMAGES=64
# EVAL_N=4 SMOKE_RECIPES="hybrid v" bash scripts/gpu-train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-6}
OUT=${OUT:-/tmp/glide-out}
INIT=${INIT:-www/models/base.safetensors}
W=/tmp/glide
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
rm -rf "$W" && mkdir -p "$OUT" "$W/data"
xz -dc .device/glide.xz > "$W/glide" && chmod +x "$W/glide"
xz -dc .device/data32.tar.xz | tar -C "$W/data" -xf -
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi (CPU rehearsal?)"
cfg="$W/emoji32-gpu.json"
sed "s#\"shards\": \"data/emoji32\"#\"shards\": \"$W/data\"#" configs/emoji32-gpu.json > "$cfg"
bench_steps=10
if [ "${SMOKE:-0}" = 1 ]; then
  # The same script on flex, sized to a minute: batch 16, few steps.
  sed -i 's#"batch_size": 256#"batch_size": 16#; s#"sample_every": 2000#"sample_every": 20#; s#"eval_every": 500#"eval_every": 20#' "$cfg"
  MINUTES=${SMOKE_MINUTES:-0.5}
  bench_steps=2
fi
"$W/glide" bench-train --config "$cfg" --steps "$bench_steps" 2>&1 | tee "$OUT/bench.txt"
if [ "${RECIPES:-0}" = 1 ]; then
  # The model card's equal-budget recipe table instead of training the bundled model: every
  # configs/recipes/*.json from scratch, IMAGES images each, at most ROW_MINUTES per recipe.
  rows=$(find configs/recipes -name "*.json" | wc -l)
  [ -n "${SMOKE_RECIPES:-}" ] && rows=$(wc -w <<< "$SMOKE_RECIPES")
  G="$W/glide" DATA="$W/data" OUT="$W/recipes" IMAGES=${IMAGES:-100000} \
    MINUTES=${ROW_MINUTES:-$(awk -v m="$MINUTES" -v n="$rows" 'BEGIN { print m / n }')} \
    EVAL_N=${EVAL_N:-200} bash scripts/recipes.sh ${SMOKE_RECIPES:-} > "$OUT/recipes.txt" 2>&1 \
    || echo "recipes.sh failed: see recipes.txt" | tee -a "$OUT/recipes.txt"
  cp "$W/recipes/recipes.md" "$OUT/" || true
  tar -C "$W/recipes" -cJf "$OUT/recipes-logs.tar.xz" --exclude='*.safetensors' --exclude=samples .
  ls -la "$OUT"
  exit 0
fi
"$W/glide" train --config "$cfg" --init "$INIT" --out-dir "$W/run" --max-minutes "$MINUTES" \
  2>&1 | tail -n 40 > "$OUT/train.txt"
cp "$W/run/ema.safetensors" "$W/run/log.csv" "$W/run/loss.png" "$OUT/"
"$W/glide" sample --weights "$W/run/ema.safetensors" --sampler ddim --steps 25 --guidance 3 --n 8 \
  --prompt "a red apple" --prompt "a cat face, 3d render" --prompt "pizza, noto style" \
  --prompt "a rocket, twemoji style" --prompt "a red heart, glossy 3d" --prompt "a fox" \
  --grid "$OUT/samples.png"
ls -la "$OUT"
