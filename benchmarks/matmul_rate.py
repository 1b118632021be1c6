"""The GPUs' fp16 matmul rate (8192^3, the physical limit bench_rpexec.py reports), measured in a fresh
subprocess so that the benchmark's parent process never initialises CUDA."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def matmul_flops_per_s() -> float:
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
    return 20 * 2 * 8192**3 / (time.perf_counter() - t)


def matmul_probe() -> tuple[float, int]:
    """(fp16 matmul FLOP/s of one GPU, GPUs), measured in a subprocess."""
    code = ("import sys; sys.path.insert(0, %r); import torch; from benchmarks.matmul_rate import matmul_flops_per_s; "
            "print(matmul_flops_per_s(), torch.cuda.device_count())") % str(Path(__file__).resolve().parents[1])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    rate, n = proc.stdout.split()[-2:]
    return float(rate), int(n)
