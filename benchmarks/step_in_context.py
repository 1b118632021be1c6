"""rpexec's host STEP (HostParams.step) over real decoder layers, in the conditions a run puts it in.

e03's traces show the STEP's measured/predicted ratio splits by what runs beside it: STEPs with no GPU
compute beside them ran 0.70-1.04x rpsim's prediction, STEPs beside GPU compute 1.11-1.46x, with DMA
overlap about the same in both. This probe separates the causes on the GPU machine:

- the layer: e03's real layer shapes (llama-0.7b ... llama3-8b), several layers stepped in turn as a run
  does, against the synthetic one-tensor layer `rpexec calibrate` times (a 157M-parameter Linear);
- the staged gradients: pinned buffers written by D2H copies from a GPU, as OFFLOADs write them;
- what runs beside: nothing; Python lane threads keeping each GPU busy with GEMMs (waiting on CUDA
  with its default spin); H2D + D2H copies on the GPUs; both.

    python3 benchmarks/step_in_context.py --out DIR [--sizes llama-0.7b,llama-1.8b] [--staged 1,8]

Prints one line per measurement and writes step_in_context.json under --out. CUDA only.
With --layer-rates it instead times the STEP alone over the layers of a few Llama shapes, with 1 and 8
staged gradients, and prints the Adam and accumulation rates each gives (the synthetic one-tensor
probe `rpexec calibrate` uses gives one rate per host: 6.7e9 accumulated params/s on an H200 host,
against 9-15e9 for these real layers, whose tensors stay in cache across their staged gradients)."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import torch

from rpexec.hostparams import HostParams
from rpexec.model import build_layers
from rpsim.specs import ModelSpec

# Llama-style layer shapes (head_dim 128): e03's llama-0.7b and llama-1.8b/2.8b, Llama-3-8B, a 14B class.
LAYER_SHAPES = ((2048, 16, 4, 5632), (3072, 24, 8, 8192), (4096, 32, 8, 14336), (5120, 40, 8, 13824))
LAYERS_STEPPED = 3  # distinct layers stepped round-robin: each meets its own master and Adam state cold
STAGED_COUNTS = (1, 8)


def layer_spec(hidden: int, heads: int, kv_heads: int, mlp: int) -> ModelSpec:
    return ModelSpec(name=f"layer-{hidden}", n_layers=LAYERS_STEPPED, hidden=hidden, n_heads=heads,
                     n_kv_heads=kv_heads, head_dim=128, mlp_width=mlp, vocab=1024)


def step_times_s(host: HostParams, shapes: list[dict[str, torch.Size]], n_staged: int, reps: int,
                 dtype: torch.dtype, source: torch.Tensor | None) -> list[float]:
    """Seconds of each STEP after the first pass (which creates Adam's state and the pools' buffers),
    every layer stepped in turn with n_staged gradients staged per parameter. `source`: a GPU tensor the
    staged gradients are copied from (CUDA), or None (filled on the CPU)."""
    stream = torch.cuda.Stream(source.device) if source is not None else None
    times = []
    for rep in range(reps + 1):
        for layer, layer_shapes in enumerate(shapes):
            for _ in range(n_staged):
                grads = {name: host.grad_buffer(shape, dtype) for name, shape in layer_shapes.items()}
                if stream is not None:
                    with torch.cuda.stream(stream):
                        for buf in grads.values():
                            buf.view(-1).copy_(source[:buf.numel()], non_blocking=True)
                    stream.synchronize()
                else:
                    for buf in grads.values():
                        buf.fill_(1e-3)
                host.stage_grads(layer, rep, grads)
            t = time.perf_counter()
            host.step(layer, rep, capture=False)
            if rep:
                times.append(time.perf_counter() - t)
    return times


def layer_step_rates(dtype: torch.dtype, device: str, reps: int = 2,
                     layer_shapes: tuple[tuple[int, int, int, int], ...] = LAYER_SHAPES) -> list[dict[str, float]]:
    """Per layer shape: its parameters, the median STEP with 1 and with 8 staged gradients, and the rates
    they give (the difference is seven accumulations; the rest is Adam and the refresh)."""
    rows = []
    for hidden, heads, kv, mlp in layer_shapes:
        layers = build_layers(layer_spec(hidden, heads, kv, mlp))[1:-1]
        host = HostParams(layers, dtype, pin=device == "cuda", lag=1)
        shapes = [{n: p.shape for n, p in layer.named_parameters()} for layer in layers]
        params = sum(p.numel() for p in layers[0].parameters())
        source = None
        if device == "cuda":
            source = torch.randn(max(p.numel() for p in layers[0].parameters()), device="cuda",
                                 dtype=dtype).mul_(1e-3)
        one, eight = (statistics.median(step_times_s(host, shapes, n, reps, dtype, source)) for n in STAGED_COUNTS)
        per_grad_s = max(eight - one, 1e-12) / (STAGED_COUNTS[1] - STAGED_COUNTS[0])
        rows.append({"hidden": hidden, "mlp": mlp, "layer_params": params, "step_1_staged_s": one,
                     "step_8_staged_s": eight, "adam_params_per_s": params / max(one - per_grad_s, 1e-12),
                     "grad_accumulate_params_per_s": params / per_grad_s})
        del host, layers, source
    return rows


def loop_step_host_params():
    """HostParams with the STEP as it was before rpexec.step_loops (one torch op per parameter and
    staged gradient), kept here for the A/B."""
    class LoopStep(HostParams):
        def step(self, layer: int, it: int, capture: bool) -> None:
            with self.lock:
                staged = self.staged.pop((layer, it), [])
            params = dict(self.layers[layer].named_parameters())
            with torch.no_grad():
                for name, p in params.items():
                    p.grad = self.fp32_grad(name, p)
                    for i, g in enumerate(staged):
                        if i == 0:
                            p.grad.copy_(g[name])
                        else:
                            p.grad.add_(self._scratch(p.shape).copy_(g[name]))
            for g in staged:
                for t in g.values():
                    self.grad_pool.release(t)
            self.optim[layer].step()
            target = (it + self.lag) % 2
            with torch.no_grad():
                for name, p in params.items():
                    self.copies[layer][target][name].copy_(p)
    return LoopStep


class Beside:
    """Background threads: `lanes` GPUs kept busy by a Python thread issuing GEMMs and waiting on them
    (rpexec's compute lanes), and `dma` GPUs copying H2D and D2H at once (its transfer lanes)."""

    def __init__(self, lanes: int, dma: int, pyspin: int = 0) -> None:
        from rpexec.background_load import BackgroundLoad
        self.load = BackgroundLoad("cuda", 0, torch.bfloat16)  # reuse its workers, choose them here
        self.load.threads = ([threading.Thread(target=self.load._compute, args=(g, torch.bfloat16), daemon=True)
                              for g in range(lanes)]
                             + [threading.Thread(target=self.load._dma, args=(g,), daemon=True) for g in range(dma)]
                             + [threading.Thread(target=self._pyspin, daemon=True) for _ in range(pyspin)])

    def _pyspin(self) -> None:
        """A thread running Python bytecode all the time (holding the GIL but for switches)."""
        n = 0
        while not self.load.stop.is_set():
            n += 1

    def __enter__(self):
        self.load.__enter__()
        return self

    def __exit__(self, *exc):
        self.load.__exit__(*exc)


def main() -> None:
    from e03_sim_vs_real import model

    from rpexec.profile import cpu_optimizer_step_times
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="llama-0.7b,llama-1.8b,llama3-8b")
    ap.add_argument("--staged", default="1,8")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-synthetic", action="store_true", help="skip the synthetic one-tensor probe")
    ap.add_argument("--layer-rates", action="store_true",
                    help="time the STEP alone over each LAYER_SHAPES layer and print its rates (layer_step_rates)")
    ap.add_argument("--conditions", default="", help="comma-separated subset of the conditions (default all)")
    ap.add_argument("--threads", default="", help="comma-separated torch intra-op thread counts to run each "
                    "measurement at (default: torch's own)")
    ap.add_argument("--switch-interval-s", type=float, default=None, help="sys.setswitchinterval for the probe")
    ap.add_argument("--variants", default="scripted", help="scripted (rpexec's STEP), loop (the per-op loop it replaced), or both")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.layer_rates:
        rows = []
        for threads in [int(x) for x in a.threads.split(",") if x] or [torch.get_num_threads()]:
            torch.set_num_threads(threads)
            for row in layer_step_rates(torch.bfloat16, "cuda", reps=3):
                rows.append({"threads": threads, **row})
                print(json.dumps(rows[-1]), flush=True)
        (out / "layer_step_rates.json").write_text(json.dumps(rows, indent=1))
        return
    n_gpus = torch.cuda.device_count()
    if a.switch_interval_s:
        sys.setswitchinterval(a.switch_interval_s)
    conditions = {"alone": (0, 0), "pyspin1": (0, 0, 1), "lanes1": (1, 0), f"lanes{n_gpus}": (n_gpus, 0), f"dma{n_gpus}": (0, n_gpus),
                  f"lanes{n_gpus}+dma{n_gpus}": (n_gpus, n_gpus), "lanes1+dma1": (1, 1)}
    if a.conditions:
        conditions = {k: v for k, v in conditions.items() if k in a.conditions.split(",")}
    results: dict = {"switch_interval_s": sys.getswitchinterval(), "threads": torch.get_num_threads(), "n_gpus": n_gpus, "rows": []}
    if not a.no_synthetic:
        synthetic = cpu_optimizer_step_times("bf16", 157286400, 3)
        results["synthetic_alone"] = synthetic
        print("synthetic 157M Linear, alone:", json.dumps(synthetic), flush=True)
    for size in a.sizes.split(","):
        m = model(size)
        one = replace(m, n_layers=LAYERS_STEPPED, vocab=1024)  # the vocabulary is not stepped here
        layers = build_layers(one)[1:-1]
        hosts = {"scripted": HostParams, "loop": loop_step_host_params()}
        shapes = [{n: p.shape for n, p in layer.named_parameters()} for layer in layers]
        params = sum(p.numel() for p in layers[0].parameters())
        src = torch.randn(max(p.numel() for p in layers[0].parameters()), device="cuda:0",
                          dtype=torch.bfloat16).mul_(1e-3)
        for variant in a.variants.split(","):
            host = hosts[variant](layers, torch.bfloat16, pin=True, lag=1)
            for threads in [int(x) for x in a.threads.split(",") if x] or [torch.get_num_threads()]:
                torch.set_num_threads(threads)
                for cond, spec in conditions.items():
                    for n in (int(x) for x in a.staged.split(",")):
                        with Beside(*spec):
                            ts = step_times_s(host, shapes, n, a.reps, torch.bfloat16, src)
                        med = statistics.median(ts)
                        row = {"size": size, "variant": variant, "threads": threads, "condition": cond,
                               "n_staged": n, "layer_params": params, "step_s_median": med, "step_s": ts,
                               "params_per_s": params / med}
                        results["rows"].append(row)
                        print(f"{size:11s} {variant:7s} threads {threads:2d} {cond:14s} staged {n}: {med * 1e3:8.2f} ms "
                              f"({params / med / 1e9:.2f} G params/s)", flush=True)
            del host
        del layers, src
        torch.cuda.empty_cache()
    (out / "step_in_context.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
