"""Rates of the host optimizer step that rpexec's STEP runs, measured in isolation (issue 15, item 1):

- torch's fused CPU AdamW against the foreach and the per-tensor (for-loop) implementations;
- rpexec's whole STEP (HostParams.step: widen and sum the staged gradients, AdamW, refresh the
  compute-dtype copy), timed by rpexec.profile;
- whether the step holds the GIL: a pure-Python thread counts while the step runs; if the step held
  the GIL, the counter would stall (lane threads issue kernels from Python and would stall too).

    python3 benchmarks/host_step.py --hidden 1024 --mlp 4096 --layers 4 --out results/

Prints one line per measurement and writes host_step.json under --out."""
from __future__ import annotations

import argparse
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
    from rpexec.profile import cpu_optimizer_step_times
    n = sum(p.numel() for params in layers for p in params)
    out["step"] = cpu_optimizer_step_times("fp16", n, 3)
    for k in (1, 4):
        print(f"rpexec STEP ({k} staged fp16 grads): {n / out['step'][f'step_{k}_staged_s'] / 1e9:.3f} G params/s",
              flush=True)
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
