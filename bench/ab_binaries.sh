#!/usr/bin/env bash
# Two vitkit binaries side by side on the same bench rows, interleaved
# (A B A B ...), so that a shared, noisy machine slows them alike; prints each
# run's median latency and peak RSS, then the medians of the runs and B/A.
#   bench/ab_binaries.sh OLD_VITKIT NEW_VITKIT [ROUNDS] [-- BENCH ARGS...]
# Default rows: ViT-B/16 batch 1 fp32 and bf16, the default model batch 256 fp32.
set -euo pipefail
A=$1; B=$2; ROUNDS=${3:-3}
shift 3 || shift $#
if [ "${1:-}" = "--" ]; then shift; CASES=("$*"); else
  SRC=$(cd "$(dirname "$0")/.." && pwd)
  CASES=("vit_b_16 --batch 1 --reps 8 --warmup 2"
         "vit_b_16 --batch 1 --precision bf16 --reps 5 --warmup 1"
         "$SRC/models/vit-tiny-fmnist.safetensors --batch 256 --reps 8 --warmup 2")
fi
for c in "${CASES[@]}"; do
  echo "== bench $c"
  declare -a ta=() tb=()
  for r in $(seq "$ROUNDS"); do
    for who in A B; do
      bin=$A; [ $who = B ] && bin=$B
      j=$($bin bench $c --json -q)
      ms=$(python3 -c 'import json,sys; r=json.load(sys.stdin)["rows"][0]; print(r["median_ms"], r["peak_rss_mib"])' <<<"$j")
      echo "  round $r $who: median_ms peak_rss_mib = $ms"
      if [ $who = A ]; then ta+=("${ms%% *}"); else tb+=("${ms%% *}"); fi
    done
  done
  python3 - "${ta[*]}" "${tb[*]}" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]; b = [float(x) for x in sys.argv[2].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"  A median {ma:.2f} ms, B median {mb:.2f} ms, B/A {mb / ma:.3f}")
PY
  unset ta tb
done
