"""Runs a plan under torch.profiler (host ops and CUDA kernels) and writes a gzipped Chrome trace, to see
what the host and each stream do inside one action; prints the slowest host ops.

    python3 benchmarks/profile_run.py PLAN.json --iters 2 --out trace.json.gz
"""
from __future__ import annotations

import argparse
import gzip
import shutil

from torch.profiler import ProfilerActivity, profile

from rpexec.checks import model_and_shape
from rpexec.session import RunOptions, run_plan
from rpsim.ir.planio import load_plan


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("plan")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    plan = load_plan(a.plan)
    model, seq, mb_size, precision = model_and_shape(plan)
    opts = RunOptions(device="cuda", dtype=precision, blocks=max(1, a.iters // plan.n_iters))
    run_plan(plan, model, seq, mb_size, opts)  # first run: allocator, cuBLAS and host state warm
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_plan(plan, model, seq, mb_size, opts)
    raw = a.out.removesuffix(".gz")
    prof.export_chrome_trace(raw)
    with open(raw, "rb") as src, gzip.open(a.out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
