#!/usr/bin/env bash
# The equal-budget recipe comparison of the base model's model card (issue 12, "learn more per
# image"): every config in configs/recipes/ trains from scratch on the same data for the same
# number of images, then is scored by nearest-neighbour accuracy (`glide eval-emoji`, s = 3) and
# held-out loss. Writes $OUT/recipes.md (a markdown table) and one run folder per recipe.
#   scripts/recipes.sh [recipe ...]        # default: every configs/recipes/*.json
# Environment: IMAGES (images per recipe, default 100000), EVAL_N (captions per set, default
# 200), OUT (default runs/recipes), G (the glide binary, default target/release/glide, built if
# missing), DATA (shards of `glide data emoji`, default data/emoji), MINUTES (a wall-clock cap
# per recipe; a capped row says how many images it saw), EXTRA (more `glide train` flags).
# Rows already in $OUT/recipes.md for the same IMAGES and EVAL_N are kept and not rerun.
# On this 2-core CPU a row of 100k images takes ~45 min (36-39 images/s at 32 channels) plus ~3-5 min
# of evaluation; scripts/gpu-train.sh runs it on a lent GPU (RECIPES=1).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-100000}
EVAL_N=${EVAL_N:-200}
OUT=${OUT:-runs/recipes}
DATA=${DATA:-data/emoji}
G=${G:-target/release/glide}
if [ ! -x "$G" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release -p glide-cli
fi
[ -d "$DATA" ] || $G data emoji --out "$DATA"
declare -A what=(
  [hybrid]="GLIDE's loss: ε MSE + VLB of the learned-range variance"
  [hybrid-minsnr5]="GLIDE's loss, the ε MSE weighted by min-SNR γ = 5"
  [v]="v MSE, unweighted (the bundled model's recipe since part 9)"
  [v-minsnr5]="v MSE weighted by min-SNR γ = 5 (parts 4–8)"
  [v-lr5e-4]="v, learning rate 5e-4 (others 1e-3)"
  [v-lr2e-3]="v, learning rate 2e-3"
  [v-batch64]="v, batch 64 (others 16): a quarter of the steps"
  [v-width64]="v, 64 channels (others 32): ~4× the parameters"
  [v-ema9999]="v, EMA decay 0.9999 (others 0.999; the warm-up min(decay, (1+n)/(10+n)) binds both before step 8,991)"
  [v-ema99]="v, EMA decay 0.99 (binds from step 890: a horizon of ~100 steps)"
)
if [ $# -gt 0 ]; then names=("$@"); else
  names=()
  for f in configs/recipes/*.json; do names+=("$(basename "$f" .json)"); done
fi
mkdir -p "$OUT"
table="$OUT/recipes.md"
title="$IMAGES images per recipe, from scratch; \`glide eval-emoji --n $EVAL_N --guidance 3\` on the EMA weights"
# A table of the same budget goes on: its rows are kept and its recipes are not run again
# (a stopped comparison continues in a later invocation). Another budget starts a new table.
if [ ! -f "$table" ] || [ "$(head -n 1 "$table")" != "$title" ]; then
  {
    echo "$title"
    echo
    echo "| recipe | what differs | images | steps | wall (min) | images/s | held-out ε-MSE (last evaluation) | EMA held-out loss (its own objective) | NN top 1 / top 5 / median rank, training | NN top 1 / top 5 / median rank, held-out |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
  } > "$table"
fi
for name in "${names[@]}"; do
  cfg="configs/recipes/$name.json"
  [ -f "$cfg" ] || { echo "recipes: no $cfg; the recipes are the files in configs/recipes/" >&2; exit 1; }
  if grep -q "^| \`$name\` |" "$table"; then
    echo "recipes: $name is already in $table (delete its row to run it again)"
    continue
  fi
  run="$OUT/$name"
  tmp_cfg="$OUT/$name.config.json"
  # The run's data and out_dir follow DATA and OUT.
  sed "s#\"shards\": \"[^\"]*\"#\"shards\": \"$DATA\"#" "$cfg" > "$tmp_cfg"
  batch=$(grep -o '"batch_size": [0-9]*' "$cfg" | grep -o '[0-9]*$')
  steps=$(( (IMAGES + batch - 1) / batch ))
  cap=()
  [ -n "${MINUTES:-}" ] && cap=(--max-minutes "$MINUTES")
  start=$(date +%s)
  # shellcheck disable=SC2086
  $G train --config "$tmp_cfg" --out-dir "$run" --steps "$steps" "${cap[@]}" ${EXTRA:-} \
    > "$run.train.txt" 2>&1 || { tail -n 20 "$run.train.txt" >&2; exit 1; }
  wall=$(( $(date +%s) - start ))
  # The log's last row with an evaluation (the trainer evaluates at its last step).
  last=$(awk -F, 'NR > 1 && $9 != "" { row = $0 } END { print row }' "$run/log.csv")
  done_steps=$(tail -n 1 "$run/log.csv" | cut -d, -f1)
  if ! [[ "$done_steps" =~ ^[0-9]+$ ]] || [ -z "$last" ]; then
    echo "| \`$name\` | ${what[$name]:-} | no evaluated step within the ${MINUTES:-} min cap | | | | | | | |" >> "$table"
    continue
  fi
  ips=$(tail -n 1 "$run/log.csv" | cut -d, -f7)
  heldout_mse=$(cut -d, -f9 <<< "$last")
  ema_loss=$(cut -d, -f11 <<< "$last")
  eval_step=$(cut -d, -f1 <<< "$last")
  at=""
  [ "$eval_step" = "$done_steps" ] || at=" (step $eval_step)"
  $G eval-emoji --weights "$run/ema.safetensors" --data "$DATA" --n "$EVAL_N" --guidance 3 \
    > "$run.eval.md" 2>&1 || { tail -n 20 "$run.eval.md" >&2; exit 1; }
  # Rows of eval-emoji's table: | captions | guidance | top 1 | top 5 | median rank | chance | n |
  # (the median rank among all emoji still moves when no sample's nearest is the captioned one yet)
  nn() { awk -F'|' -v set="$1" '$2 ~ "^ *"set" *$" { gsub(/ /, "", $4); gsub(/ /, "", $5); gsub(/ /, "", $6); print $4 " / " $5 " / " $6 }' "$run.eval.md"; }
  printf '| `%s` | %s | %s | %s | %.1f | %.1f | %.4f%s | %.4f%s | %s | %s |\n' "$name" "${what[$name]:-}" \
    "$(( done_steps * batch ))" "$done_steps" "$(awk -v s="$wall" 'BEGIN { print s / 60 }')" "$ips" "$heldout_mse" "$at" \
    "$ema_loss" "$at" "$(nn training)" "$(nn held-out)" >> "$table"
  echo "recipes: $name done in $wall s"
done
cat "$table"
