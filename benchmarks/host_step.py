"""Rates of the host optimizer step that rpexec's STEP runs, measured in isolation (issue 15, item 1):

- torch's fused CPU AdamW against the foreach and the per-tensor (for-loop) implementations;
- rpexec's whole STEP (HostParams.step: widen and sum the staged gradients, AdamW, refresh the
  compute-dtype copy) on layers of a given width;
- whether the step holds the GIL: a pure-Python thread counts while the step runs; if the step held
  the GIL, the counter would stall (lane threads issue kernels from Python and would stall too).

    python3 benchmarks/host_step.py --hidden 1024 --mlp 4096 --layers 4 --out results/

Prints one line per measurement and writes host_step.json under --out. benchmarks/diagnose_rpexec.py
calls `step_rate` and `gil_probe` on the device machine."""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def layer_params(hidden: int, mlp: int, kv: int, n_layers: int):
    import torch
    shapes = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden), (mlp, hidden), (mlp, hidden),
              (hidden, mlp), (hidden,), (hidden,)]
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(s, generator=g).mul_(0.02).requires_grad_(True) for s in shapes] for _ in range(n_layers)]


def adamw_rate(layers, impl: str, reps: int = 3) -> float:
    """Parameters per second of one AdamW step per layer (fp32 grads already in place)."""
    import torch
    kwargs = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[impl]
    opts = []
    for params in layers:
        for p in params:
            p.grad = torch.full_like(p, 1e-3)
        opts.append(torch.optim.AdamW(params, lr=1e-4, **kwargs))
    for o in opts:  # first step creates the state (first touch), not timed
        o.step()
    n = sum(p.numel() for params in layers for p in params)
    t = time.perf_counter()
    for _ in range(reps):
        for o in opts:
            o.step()
    return reps * n / (time.perf_counter() - t)


def step_rate(hidden: int, mlp: int, kv: int, n_layers: int, n_staged: int = 4, reps: int = 3,
              dtype_name: str = "fp16", pin: bool = False) -> dict:
    """rpexec's whole STEP (HostParams.step) on n_layers decoder-shaped layers with n_staged downloaded
    gradients each: parameters per second, and its parts (sum, AdamW, refresh) timed separately."""
    import torch
    from torch import nn

    from rpexec.hostparams import HostParams
    from rpexec.warmup import warm_host_state
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    layers = []
    for params in layer_params(hidden, mlp, kv, n_layers):
        m = nn.Module()
        for i, p in enumerate(params):
            m.register_parameter(f"p{i}", nn.Parameter(p.detach()))
        layers.append(m)
    host = HostParams(layers, dtype, pin=pin, lag=2)
    warm_host_state(host)
    n = sum(p.numel() for m in layers for p in m.parameters())

    def stage(it: int) -> None:
        for i, m in enumerate(layers):
            for _ in range(n_staged):
                host.stage_grads(i, it, {name: host.grad_buffer(p.shape, dtype).fill_(1e-3)
                                         for name, p in m.named_parameters()})
    stage(0)
    for i in range(n_layers):
        host.step(i, 0, False)
    total = 0.0
    for it in range(1, reps + 1):
        stage(it)
        t = time.perf_counter()
        for i in range(n_layers):
            host.step(i, it, False)
        total += time.perf_counter() - t
    return {"params": n, "n_staged": n_staged, "step_params_per_s": reps * n / total,
            "threads": torch.get_num_threads()}


def gil_probe(work, duration_hint_s: float = 0.0) -> dict:
    """Run `work()` on a thread while this thread counts in pure Python. Returns the work's seconds, the
    Python counter's rate during it, and the same rate with nothing else running: a ratio near 1 means
    the work released the GIL for its duration (torch's ops release it around their kernels)."""
    def count(seconds: float) -> float:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += 1
        return n / seconds

    alone = count(0.3)
    done = threading.Event()
    result: dict = {}

    def run() -> None:
        t = time.perf_counter()
        work()
        result["work_s"] = time.perf_counter() - t
        done.set()

    thread = threading.Thread(target=run)
    n, t0 = 0, time.perf_counter()
    thread.start()
    while not done.is_set():
        n += 1
    elapsed = time.perf_counter() - t0
    thread.join()
    return {"work_s": result["work_s"], "python_rate_alone": alone, "python_rate_during": n / elapsed,
            "ratio": (n / elapsed) / alone}


def main(argv: list[str] | None = None) -> int:
    import torch
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--mlp", type=int, default=4096)
    p.add_argument("--kv", type=int, default=256, help="K/V projection width")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--out", default=None, help="directory for host_step.json")
    a = p.parse_args(argv)
    layers = layer_params(a.hidden, a.mlp, a.kv, a.layers)
    out: dict = {"threads": torch.get_num_threads()}
    for impl in ("fused", "foreach", "for-loop"):
        out[f"adamw_{impl}_params_per_s"] = adamw_rate(layers, impl)
        print(f"AdamW {impl:8s}: {out[f'adamw_{impl}_params_per_s'] / 1e9:.3f} G params/s", flush=True)
    out["step"] = step_rate(a.hidden, a.mlp, a.kv, a.layers)
    print(f"rpexec STEP (4 staged fp16 grads): {out['step']['step_params_per_s'] / 1e9:.3f} G params/s", flush=True)
    opts = [torch.optim.AdamW(ps, lr=1e-4, fused=True) for ps in layers]
    out["gil_fused_adamw"] = gil_probe(lambda: [o.step() for o in opts for _ in range(3)])
    print(f"GIL during fused AdamW: Python thread ran at {out['gil_fused_adamw']['ratio']:.2f}x its solo rate",
          flush=True)
    if a.out:
        from rpsim.report.files import write_json_atomic
        Path(a.out).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(a.out) / "host_step.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
