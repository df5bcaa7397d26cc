#!/usr/bin/env bash
# One prepared GPU run (the lent H100/H200 of DEVELOPERS.md): trains configs/emoji64.json for a
# fixed wall-clock budget on CUDA, checkpoints, writes a sample grid and copies the EMA weights,
# log, plot and grid to $OUT. Prepare on the build machine:
#   CUDARC_CUDA_VERSION=13000 cargo build --release -p glide-cli --features cuda
#   mkdir -p .device && xz -T2 -c target/release/glide > .device/glide.xz
#   cp -r data/emoji .device/data   # the 64-px shards (train-*.tar, heldout-*.tar only)
# then run it with the device tool: carry [".device"], command `bash scripts/gpu-train.sh`.
# UNTESTED so far: no session with a GPU has run it yet.
set -euo pipefail
MINUTES=${MINUTES:-8}
OUT=${OUT:-/tmp/glide-out}
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
mkdir -p "$OUT" /tmp/glide
xz -dc .device/glide.xz > /tmp/glide/glide && chmod +x /tmp/glide/glide
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
sed "s#\"shards\": \"data/emoji\"#\"shards\": \".device/data\"#" configs/emoji64.json > /tmp/glide/emoji64.json
/tmp/glide/glide bench-train --config /tmp/glide/emoji64.json --steps 10 | tee "$OUT/bench.txt"
/tmp/glide/glide train --config /tmp/glide/emoji64.json --out-dir /tmp/glide/run --max-minutes "$MINUTES"
cp /tmp/glide/run/ema.safetensors /tmp/glide/run/log.csv /tmp/glide/run/loss.png "$OUT/"
cp "$(ls /tmp/glide/run/samples/*.png | tail -1)" "$OUT/samples.png"
ls -la "$OUT"
