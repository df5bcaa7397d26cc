#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for MINUTES each (libFuzzer through cargo-fuzz), seeded from
# fuzz/seeds/<target> (made from our fixtures by scripts/fuzz-seeds.sh) and its growing corpus.
#   scripts/fuzz.sh [MINUTES] [TARGET...]
# The stable toolchain builds it with RUSTC_BOOTSTRAP=1. Crashes land in fuzz/artifacts/<target>/;
# each becomes a regression test (and its input goes to fuzz/regressions/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${1:-10}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(tokenizer weights pytorch image_mask shard train_config)
export PATH="$HOME/.cargo/bin:$PATH" RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
bash scripts/fuzz-seeds.sh
cd fuzz
# No sanitizer: our code is safe Rust, and the build of burn under ASan would take an hour here.
cargo fuzz build -s none --release
declare -A MAX_LEN=([tokenizer]=4096 [train_config]=8192 [image_mask]=65536 [shard]=262144
  [weights]=262144 [pytorch]=300000)
# Each target's whole libFuzzer output is kept in fuzz/logs/; the script exits non-zero when any
# target crashed (its input is then in fuzz/artifacts/<target>/), after running the others.
mkdir -p logs
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t" "regressions/$t"
  log="logs/$t-$(date -u +%Y%m%dT%H%M%SZ).log"
  echo "== $t: $MINUTES min (log: fuzz/$log)"
  status=0
  cargo fuzz run -s none --release "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- \
    -max_total_time=$((MINUTES * 60)) -rss_limit_mb=4096 -timeout=20 -max_len=${MAX_LEN[$t]} \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E "^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|==|.*(panicked|ERROR|crash|deadly))" "$log" || true
  if [ "$status" -ne 0 ]; then
    echo "== $t FAILED (exit $status): the crashing input is in fuzz/artifacts/$t/, the output in fuzz/$log" >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: ${#failed[@]} target(s) crashed: ${failed[*]}; add each input to fuzz/regressions/<target>/ once fixed" >&2
  exit 1
fi
