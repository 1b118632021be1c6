"""Does a GEMM's speed at the GPU's power cap depend on what the operands hold, or on copies beside it?

Why: on 2x H200 rpexec and the `roundpipe` library run the same fp16 kernels, both at the software power
cap, and rpexec's GPUs hold a 3-6% lower SM clock (benchmarks/notes-rpexec.md, session 10). The two
differ in their weights' values: rpexec draws every tensor from normal(0, std) (rpexec.model.build_layers),
the benchmark fills the library's from one tiled block of 2^20 normal values (benchmarks/library_run.py),
and a GEMM's energy depends on how often its operands' bits toggle. They may also differ in how much
copy-engine traffic runs beside their kernels.

Each case runs the 8B decoder's MLP up-projection GEMM (tokens x hidden @ hidden x ffn, fp16) back to
back for `--seconds` on one GPU, and prints TFLOP/s, the median SM clock and power while it ran
(benchmarks/gpu_clocks.py) and the fraction of samples at the power cap:
- normal: weights and inputs from normal(0, 0.02) and normal(0, 1), drawn per element (rpexec's fill);
- tiled: the same, weights filled the library benchmark's way (library_run.fast_fill_);
- normal+copies: normal, with host-to-device and device-to-host copies of pinned 256 MiB buffers
  running on two other streams all the while.

    python3 benchmarks/gemm_power.py --seconds 8
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = ("normal", "tiled", "normal+copies")


def make_operands(case: str, tokens: int, hidden: int, ffn: int, device):
    import torch

    from library_run import BLOCK, fast_fill_
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(tokens, hidden, generator=g).to(device, torch.float16)
    w = torch.empty(ffn, hidden, dtype=torch.float16)
    if case.startswith("tiled"):
        fast_fill_(w, torch.randn(BLOCK, generator=g), 3, 0.02)
    else:
        w.copy_(torch.randn(ffn, hidden, generator=g).mul_(0.02))
    return x, w.to(device)


def run_case(case: str, seconds: float, tokens: int, hidden: int, ffn: int, device) -> dict:
    import torch

    from gpu_clocks import sampling_clocks
    x, w = make_operands(case, tokens, hidden, ffn, device)
    copies = []
    if case.endswith("+copies"):
        n = 256 * 2**20
        host_up, host_down = (torch.empty(n, dtype=torch.uint8, pin_memory=True) for _ in range(2))
        dev_up, dev_down = torch.empty(n, dtype=torch.uint8, device=device), torch.zeros(n, dtype=torch.uint8, device=device)
        copies = [(torch.cuda.Stream(device), lambda: dev_up.copy_(host_up, non_blocking=True)),
                  (torch.cuda.Stream(device), lambda: host_down.copy_(dev_down, non_blocking=True))]
    for _ in range(20):  # cuBLAS picks its kernel, clocks ramp
        x @ w.t()
    torch.cuda.synchronize(device)
    result: dict = {"case": case}
    calls = 0
    with sampling_clocks(result):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for stream, copy in copies:
                with torch.cuda.stream(stream):
                    if stream.query():  # keep one copy queued per direction, no more
                        copy()
            for _ in range(10):
                x @ w.t()
            calls += 10
            torch.cuda.synchronize(device) if calls % 200 == 0 else None
        torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
    result["tflop_per_s"] = 2.0 * tokens * hidden * ffn * calls / elapsed / 1e12
    result["calls"] = calls
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per case")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--ffn", type=int, default=14336)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--repeat", type=int, default=2, help="rounds over the cases (alternating, against drift)")
    p.add_argument("-o", "--output", default=None, help="also write the results as JSON here")
    a = p.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("gemm_power.py: needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    results = []
    for r in range(a.repeat):
        for case in a.cases:
            res = run_case(case, a.seconds, a.tokens, a.hidden, a.ffn, device)
            res["round"] = r
            clocks = (res.get("gpu_clocks") or {}).get("0", {})
            print(f"round {r} {case:14s} {res['tflop_per_s']:7.1f} TFLOP/s  SM {clocks.get('sm_mhz', 0):6.0f} MHz  "
                  f"{clocks.get('power_w', 0):5.0f} W  capped {clocks.get('power_capped', 0):.2f}", flush=True)
            results.append(res)
    if a.output:
        from rpsim.report.files import write_json_atomic
        write_json_atomic(a.output, {"shape": [a.tokens, a.hidden, a.ffn], "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
