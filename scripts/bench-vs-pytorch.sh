#!/usr/bin/env bash
# Training throughput of our CPU trainer against the original PyTorch GLIDE code on this machine,
# at the same configurations, alternating (ours, torch, ours, torch) so that both see the same
# load; prints images/s of each run and the ratio of the means, as a markdown table.
#
#   bash scripts/bench-vs-pytorch.sh [STEPS]        (default 8 timed steps per run)
#
# Needs PyTorch and a checkout of openai/glide-text2im (MIT), neither committed here
# (../shared/bench/README.md says how to get them):
#   TORCH_PY   python with torch   (default /tmp/torch-venv/bin/python)
#   GLIDE_REF  the original code    (default /tmp/glide-text2im)
#   BENCH      torch_train_bench.py (default ../shared/bench/torch_train_bench.py)
# Nothing else should run meanwhile: the machine's 2 cores are the instrument.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-8}
TORCH_PY=${TORCH_PY:-/tmp/torch-venv/bin/python}
export GLIDE_REF=${GLIDE_REF:-/tmp/glide-text2im}
BENCH=${BENCH:-../shared/bench/torch_train_bench.py}
GLIDE=target/release/glide

die() { echo "bench-vs-pytorch: $*" >&2; exit 1; }
[ -f "$BENCH" ] || die "$BENCH is missing: this script needs ../shared/bench (the reference benchmarks)."
"$TORCH_PY" -c 'import torch' 2>/dev/null ||
  die "no PyTorch at TORCH_PY=$TORCH_PY: python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy"
[ -d "$GLIDE_REF/glide_text2im" ] ||
  die "no glide-text2im checkout at GLIDE_REF=$GLIDE_REF: see ../shared/bench/README.md (it is never committed)."
[ -f data/emoji/manifest.json ] || die "no dataset in data/emoji: run 'make data' first."
cargo build --release -p glide-cli --quiet

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# emoji32-cpu at another width: the same config with only num_channels changed.
python3 - "$tmp/emoji32-cpu-64ch.json" <<'EOF'
import json, sys
cfg = json.load(open("configs/emoji32-cpu.json"))
cfg["model"]["num_channels"] = 64
json.dump(cfg, open(sys.argv[1], "w"), indent=2)
EOF

ours() { "$GLIDE" bench-train --config "$1" --steps "$STEPS" | grep -o '[0-9.]* images/s' | cut -d' ' -f1; }
torch() { "$TORCH_PY" "$BENCH" --steps "$STEPS" "$@" | grep -o '[0-9.]* images/s' | cut -d' ' -f1; }
mean() { python3 -c 'import sys; v=[float(a) for a in sys.argv[1:]]; print(f"{sum(v)/len(v):.1f}")' "$@"; }

echo "## Training throughput against PyTorch ($(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), $(nproc) cores, $STEPS steps per run)"
echo
echo "| configuration | ours (images/s) | PyTorch $("$TORCH_PY" -c 'import torch; print(torch.__version__)') (images/s) | ratio |"
echo "| --- | --- | --- | --- |"
row() {
  local name=$1 cfg=$2; shift 2
  local o1 t1 o2 t2
  o1=$(ours "$cfg"); t1=$(torch "$@"); o2=$(ours "$cfg"); t2=$(torch "$@")
  local om tm
  om=$(mean "$o1" "$o2"); tm=$(mean "$t1" "$t2")
  echo "| $name | $o1, $o2 | $t1, $t2 | **$(python3 -c "print(f'{$om/$tm:.2f}')")×** |"
}
row "emoji32-cpu (32 ch, batch 16, 32 px)" configs/emoji32-cpu.json
row "emoji32-cpu at 64 ch" "$tmp/emoji32-cpu-64ch.json" --channels 64
# The upsampler's row (issue 34's 32 → 128 px configuration, trained on crops) joins once the
# trainer has the upsampler objective; torch_train_bench.py --super-res already times PyTorch's.
