"""Is the calibrated GEMM table slower than the GEMMs inside a run? Times the 0.7B layer's GEMM shapes
(F.linear, 8192 tokens) the way `rpexec calibrate`'s grid does (host-timed, inner = 2e11 FLOPs / the
shape's calls per timing) and over 100 back-to-back calls, beside the machine file's table rate and the
rate the profiled run reached (benchmarks/notes-strided.md: q_proj 89.7 us, 766 TFLOP/s).

    python3 benchmarks/gemm_timing_check.py --machine experiments/data/machines/h200x1.toml   # on a GPU
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (name, m, n, k) of F.linear(x (m x k), w (n x k)) in the traced layer
SHAPES = (("q/o", 8192, 2048, 2048), ("k/v", 8192, 512, 2048), ("gate/up", 8192, 5632, 2048),
          ("down", 8192, 2048, 5632))


def main() -> None:
    import torch
    import torch.nn.functional as F

    from rpexec.calibrate import time_s
    from rpsim.catalog.servers import load_server
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--machine", default="experiments/data/machines/h200x1.toml")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    table = load_server(a.machine).gpu.gemm_table("bf16")
    dev = torch.device("cuda", 0)
    print(f"{'gemm':8s} {'m':>6s} {'n':>6s} {'k':>6s} {'table':>8s} {'grid-style':>11s} {'100 calls':>10s}  TFLOP/s")
    for name, m, n, k in SHAPES:
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        flops = 2.0 * m * n * k
        grid_inner = max(1, min(50, int(2e11 // flops)))
        grid_s = time_s(dev, lambda x=x, w=w: F.linear(x, w), a.reps, grid_inner)
        long_s = time_s(dev, lambda x=x, w=w: F.linear(x, w), a.reps, 100)
        tabled = table.rate_flops_per_s(m, n, k) / 1e12 if table else float("nan")
        print(f"{name:8s} {m:6d} {n:6d} {k:6d} {tabled:8.1f} {flops / grid_s / 1e12:11.1f} {flops / long_s / 1e12:10.1f}")


if __name__ == "__main__":
    main()
