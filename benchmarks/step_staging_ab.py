"""Does how the staged gradients were written change the host STEP? CPU-filled against DMA-written (issue 14).

`rpexec profile`'s layer probe filled its staged gradients on the CPU, which leaves the last ~300 MiB
written in the last-level cache; a run's OFFLOADs write them by DMA. On the one-H200 host the probe
summed a llama-1.8b layer's 8 staged gradients in 74-113 ms while the RoundPipe-sync runs of the same
lease took 98-134 ms. This probe times the same layer's STEP (rpexec.profile.median_host_step_parts)
with its gradients staged each way, alternating round by round so that the host's drift over minutes
(benchmarks/step_allocation_or_time.py) falls on both alike.

    python3 benchmarks/step_staging_ab.py --out DIR [--threads 16,11] [--rounds 4] [--hidden 3072 --heads 24 --kv-heads 8 --mlp 8192]

Prints, per thread count and staging, the summation of 8 staged gradients and Adam + refresh per round
and their means; writes DIR/step_staging_ab.json."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGINGS = ("cpu", "dma")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", default=None, help="comma-separated STEP thread counts (default: torch's)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=3072)
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--mlp", type=int, default=8192)
    a = ap.parse_args()
    import torch
    from step_in_context import layer_spec

    from rpexec.hostparams import HostParams
    from rpexec.profile import LAYER_STEP_STAGED, host_decoder_layer, median_host_step_parts
    if not torch.cuda.is_available():
        sys.exit("step_staging_ab.py: needs a CUDA device (DMA staging)")
    layer = host_decoder_layer(layer_spec(a.hidden, a.heads, a.kv_heads, a.mlp), 0)
    host = HostParams([layer], torch.bfloat16, pin=True, lag=1)
    shapes = {n: p.shape for n, p in layer.named_parameters()}
    rows = []
    for threads in [int(t) for t in a.threads.split(",")] if a.threads else [torch.get_num_threads()]:
        torch.set_num_threads(threads)
        for r in range(a.rounds):
            for staging in STAGINGS if r % 2 == 0 else reversed(STAGINGS):
                _, sum_s, adam_s = median_host_step_parts(host, shapes, torch.bfloat16, LAYER_STEP_STAGED, a.reps, staging)
                rows.append({"threads": threads, "round": r, "staging": staging, "sum_s": sum_s, "adam_refresh_s": adam_s})
                print(json.dumps(rows[-1]), flush=True)
    print(f"threads staging   sum of {LAYER_STEP_STAGED} staged (ms), per round   mean    Adam + refresh mean")
    for threads in dict.fromkeys(r["threads"] for r in rows):
        means = {}
        for staging in STAGINGS:
            mine = [r for r in rows if r["threads"] == threads and r["staging"] == staging]
            means[staging] = statistics.fmean(r["sum_s"] for r in mine)
            print(f"{threads:7d} {staging:8s} " + " ".join(f"{r['sum_s'] * 1e3:6.1f}" for r in mine)
                  + f"   {means[staging] * 1e3:6.1f}   {statistics.fmean(r['adam_refresh_s'] for r in mine) * 1e3:6.1f}")
        print(f"        dma / cpu summation: {means['dma'] / means['cpu']:.3f}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_staging_ab.json").write_text(json.dumps({"rows": rows}, indent=1))


if __name__ == "__main__":
    main()
