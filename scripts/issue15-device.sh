#!/usr/bin/env bash
# Issue 15's GPU runs on a 2x H200 machine, in priority order under one wall-clock deadline:
#   bash scripts/issue15-device.sh OUT_DIR [SECONDS (default 540)] [PARTS (default "diag 8b 2.8b 14b")]
# 1. benchmarks/diagnose_rpexec.py (8B, where the time goes)      -> OUT/diag/diagnose.json, OUT/diag.log
# 2. benchmarks/bench_rpexec.py per size (rpexec, library auto, library with rpsim search's partition)
#                                                                  -> OUT/bench/bench-SIZE.json, OUT/bench-SIZE.log
# A part that fails or runs out of time is reported in its log and JSON; the next part still runs.
set -u
OUT=${1:?usage: issue15-device.sh OUT_DIR [SECONDS] [PARTS]}
BUDGET=${2:-540}
PARTS=${3:-"diag 8b 2.8b 14b"}
cd "$(dirname "$0")/.." && export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
mkdir -p "$OUT/bench"
END=$((SECONDS + BUDGET))
left() { echo $((END - SECONDS)); }
for size in $PARTS; do
  R=$(left)
  if [ "$size" = diag ]; then
    if [ "$R" -gt 120 ]; then
      timeout -k 5 $(( R < 230 ? R - 30 : 200 )) python3 benchmarks/diagnose_rpexec.py --out "$OUT/diag" \
        > "$OUT/diag.log" 2>&1 || echo "diagnose exit $?" >> "$OUT/diag.log"
    fi
    continue
  fi
  if [ "$R" -lt 90 ]; then echo "skipped: $R s left of the budget" > "$OUT/bench-$size.log"; continue; fi
  timeout -k 5 "$R" python3 benchmarks/bench_rpexec.py --size "$size" --iters 3 --budget-s $((R - 15)) \
    --timeout-s 240 --trace --out "$OUT/bench" > "$OUT/bench-$size.log" 2>&1 || echo "bench exit $?" >> "$OUT/bench-$size.log"
done
for f in "$OUT"/diag.log "$OUT"/bench-*.log; do
  [ -f "$f" ] || continue
  echo "== $f"
  grep -v '^JSON ' "$f" | tail -n 30
done
