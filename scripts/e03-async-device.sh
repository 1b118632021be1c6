#!/usr/bin/env bash
# Issue 14's async RoundPipe re-measurement on a 2x H200 machine, all in one lease: rpexec calibrate's
# CPU-optimizer probe (alone and under DMA + GEMM load), then e03's RoundPipe (async) runs at every size,
# then the probe again, so the runs' host step can be compared with a calibration of the same lease.
#   bash scripts/e03-async-device.sh OUT_DIR
set -u
OUT=${1:?usage: e03-async-device.sh OUT_DIR}
cd "$(dirname "$0")/.." && export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
mkdir -p "$OUT/e03"
cp experiments/data/e03/*-profile.json "$OUT/e03/"  # e03 reuses each size's profile (no re-profiling)
probe() {
  timeout 120 python3 -c "
import json, sys
from rpexec.calibrate import CalibrationSettings, optimizer_rates
r = optimizer_rates(CalibrationSettings(device='cuda', n_gpus=2, dtype='bf16', gpu_preset='h200-sxm'))
json.dump(r, open(sys.argv[1], 'w'), indent=1)
print('optimizer probe', json.dumps(r)[:600])
" "$OUT/optimizer-$1.json" 2>&1 | tail -3
}
probe before
timeout 330 python3 experiments/e03_sim_vs_real.py --measure --schedules roundpipe \
  --sizes llama-0.7b,llama-1.8b,llama-2.8b --gpus 1,2 --out "$OUT/e03" 2>&1 | grep -E "measured|FAILED|Error" 
timeout 90 python3 experiments/e03_sim_vs_real.py --measure --schedules roundpipe \
  --sizes llama3-8b --gpus 2 --out "$OUT/e03" 2>&1 | grep -E "measured|FAILED|Error"
probe after
