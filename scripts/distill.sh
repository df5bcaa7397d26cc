#!/usr/bin/env bash
# Distils the bundled base model into a few-step student (Meng et al. 2023, then Salimans & Ho
# 2022) and exports it as www/models/student.safetensors (the web page's default model).
#   scripts/distill.sh [minutes for stage 1] [minutes per progressive round] [minutes per chain fine-tune]
#                      [teacher samples per process] [teacher chains per process]
# The students train on the teacher's own samples (data/teacher-samples, `glide distill samples`):
# stage 1 (guidance) writes runs/distill/guidance; rounds 64→32→16→8→4 write runs/distill/steps-N;
# then the 8- and 4-step students are fine-tuned on the teacher's stored guided chains
# (data/teacher-trajectories, `glide distill trajectories`) into runs/distill/trajectory-N.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
stage1=${1:-35}
round=${2:-10}
chains=${3:-30}
n_samples=${4:-512}
n_chains=${5:-320}
cargo build --release -p glide-cli
G=target/release/glide
[ -d data/emoji ] || $G data emoji --out data/emoji
# The teacher's samples and chains belong to one teacher: redraw them when the base model changes.
teacher_id=$(sha256sum www/models/base.safetensors | cut -c1-16)
for d in data/teacher-samples data/teacher-trajectories; do
  if [ -d "$d" ] && [ "$(cat "$d.teacher" 2>/dev/null)" != "$teacher_id" ]; then
    echo "distill: $d was drawn from another base model; drawing it again"
    rm -rf "$d" "$d.teacher"
  fi
done
if [ ! -d data/teacher-samples ]; then
  # two processes: one sampling chain keeps about one core busy
  $G distill samples --n "$n_samples" --seed 0 --out data/teacher-samples/part-0 &
  $G distill samples --n "$n_samples" --seed 1 --out data/teacher-samples/part-1
  wait
  echo "$teacher_id" > data/teacher-samples.teacher
fi
if [ ! -d data/teacher-trajectories ]; then
  $G distill trajectories --n "$n_chains" --seed 0 --out data/teacher-trajectories/part-0 &
  $G distill trajectories --n "$n_chains" --seed 1 --out data/teacher-trajectories/part-1
  wait
  echo "$teacher_id" > data/teacher-trajectories.teacher
fi
$G distill guidance --teacher www/models/base.safetensors --config configs/distill-guidance-emoji32-cpu.json \
  --out-dir runs/distill/guidance --max-minutes "$stage1"
$G distill progressive --teacher runs/distill/guidance/ema.safetensors --from 64 --to 4 \
  --config configs/distill-emoji32-cpu.json --out-dir runs/distill --max-minutes "$round"
for n in 8 4; do
  $G distill trajectory --init runs/distill/steps-$n/ema.safetensors --student-steps $n \
    --config configs/distill-trajectory-emoji32-cpu.json --out-dir runs/distill/trajectory-$n \
    --max-minutes "$chains"
  $G export --in runs/distill/trajectory-$n/ema.safetensors --out runs/distill/student-$n.safetensors \
    --meta training_config=@runs/distill/trajectory-$n/config.json
done
cp runs/distill/student-4.safetensors www/models/student.safetensors
echo "distill: wrote www/models/student.safetensors (4 steps)"
