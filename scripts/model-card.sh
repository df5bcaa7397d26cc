#!/usr/bin/env bash
# Regenerates the sample grids and the nearest-neighbour table of the model card
# (www/models/README.md) from a model, by default the bundled one:
#   scripts/model-card.sh [weights] [captions per set] [DDIM steps] [DDIM steps of the evaluation]
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-www/models/base.safetensors}
N=${2:-200}
STEPS=${3:-25}
EVAL_STEPS=${4:-$STEPS}
export PATH="$HOME/.cargo/bin:$PATH"
cargo build -q --release -p glide-cli
G=target/release/glide
[ -f data/emoji/manifest.json ] || $G data emoji --out data/emoji
mkdir -p docs/samples
# Rows from the groups the bundled model is trained on (food, animals, hearts; data.groups).
train=(--prompt "a red apple" --prompt "a banana" --prompt "pizza, noto style"
  --prompt "a fox" --prompt "a red heart, glossy 3d" --prompt "smiling face with heart-eyes")
# Held out: the first four emoji never appear in training, in any style; the last four appear,
# but never in the named style (emoji and style are both seen elsewhere).
heldout=(--prompt "a pineapple" --prompt "a hot dog" --prompt "a snail" --prompt "a dog"
  --prompt "ice cream, 3d render" --prompt "hamburger, noto style"
  --prompt "a tiger in openmoji style" --prompt "a penguin, 3d render")
for s in 1 3; do
  $G sample --weights "$W" "${train[@]}" --n 8 --sampler ddim --steps "$STEPS" --guidance $s \
    --seed 1 --grid "docs/samples/train-s$s.png"
  $G sample --weights "$W" "${heldout[@]}" --n 8 --sampler ddim --steps "$STEPS" --guidance $s \
    --seed 1 --grid "docs/samples/heldout-s$s.png"
done
$G eval-emoji --weights "$W" --data data/emoji --n "$N" --guidance 1,3 --steps "$EVAL_STEPS" --show-misses 10 | tee docs/samples/nn-accuracy.md
