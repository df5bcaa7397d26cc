#!/usr/bin/env bash
# Prepares .device/ (git-ignored) for scripts/gpu-train.sh on a lent GPU machine, which receives
# at most 64 MiB: the glide binary (xz) and the emoji data packed at 32 px (xz, ~22 MiB).
#   scripts/gpu-prepare.sh          # CUDA build (CUDARC_CUDA_VERSION=13000, NVRTC: no GPU needed here)
#   scripts/gpu-prepare.sh --cpu    # the flex build instead: to rehearse gpu-train.sh on this CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
features=(--features cuda)
[ "${1:-}" = "--cpu" ] && features=()
[ -d data/emoji ] || cargo run --release -p glide-cli -- data emoji --out data/emoji
if [ ${#features[@]} -gt 0 ]; then
  CUDARC_CUDA_VERSION=13000 cargo build --release -p glide-cli "${features[@]}"
else
  cargo build --release -p glide-cli
fi
mkdir -p .device
xz -T2 -6 -c target/release/glide > .device/glide.xz
target/release/glide data pack --from data/emoji --out target/emoji32-pack --size 32
tar -C target/emoji32-pack -cf - . | xz -T2 -6 > .device/data32.tar.xz
du -ch .device/* | tail -n 3
