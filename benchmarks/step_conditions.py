"""Which condition of a run makes rpexec's host STEP slower than the same layer stepped alone (issue 14)?

In e03's RoundPipe runs the STEP of a decoder layer takes 10-30% longer than `step_in_context.py
--layer-rates` times the same layer alone at the same thread count, even in RoundPipe-sync runs where
nothing else runs beside it, and the trace's STEP parts (trace.meta["step_parts"]) put the excess in the
summing of the staged gradients, not in AdamW. A run differs from the alone probe in three ways this
script turns on one at a time and together, over one layer shape with 8 staged gradients:

- cold: every layer's gradients are staged (D2H from the GPU) before any layer is stepped, and a
  host buffer twice the last-level cache is streamed in between, as in a run, where a layer's
  gradients were downloaded during the backward, long before its STEP (the probe stages, then steps);
- pollers: Python threads waiting as the interpreter's idle lanes wait (threading.Event.wait with a
  50 ms timeout, rpexec.runtime), waking 20 times a second each;
- footprint: the process holds and has touched `--footprint-gib` of host memory (a run's master
  weights, Adam state and weight copies: 16 B per parameter, 45 GiB at 2.8B).

    python3 benchmarks/step_conditions.py --out DIR [--threads 16] [--footprint-gib 45] [--pollers 8]

Prints one line per condition (median STEP, and its parts' medians) and writes step_conditions.json.
On CUDA the staged gradients are pinned buffers written by D2H copies, as OFFLOADs write them (on a
CPU, for a smoke run, plain copies)."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from rpexec.hostparams import HostParams
from rpexec.model import build_layers
from rpexec.profile import last_level_cache_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_in_context import layer_spec  # noqa: E402 (a sibling script)

N_STAGED = 8


class Pollers:
    """Threads that wait as rpexec's idle lane threads do: Event.wait(0.05) in a loop."""

    def __init__(self, n: int) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._poll, daemon=True) for _ in range(n)]

    def _poll(self) -> None:
        never = threading.Event()
        while not self.stop.is_set():
            never.wait(0.05)

    def __enter__(self) -> Pollers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def probe_args(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, Path]:
    """The STEP probes' common start: `--out` (created) and `--threads` (torch's intra-op pool) besides
    the probe's own flags."""
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.threads:
        torch.set_num_threads(a.threads)
    return a, out


def decoder_host_state(hidden: int, heads: int, kv_heads: int, mlp: int
                       ) -> tuple[HostParams, list[dict[str, torch.Size]], int]:
    """A fresh host state (HostParams, pinned on CUDA as runs pin it) of LAYERS_STEPPED decoder layers of
    that shape: the state, each layer's parameter shapes, and one layer's parameter count."""
    layers = build_layers(layer_spec(hidden, heads, kv_heads, mlp))[1:-1]
    shapes = [{n: p.shape for n, p in layer.named_parameters()} for layer in layers]
    params = sum(p.numel() for p in layers[0].parameters())
    return HostParams(layers, torch.bfloat16, pin=torch.cuda.is_available(), lag=1), shapes, params


def staging_source(n: int) -> torch.Tensor:
    """What the staged gradients are copied from: small bf16 values on the GPU (on the CPU without one)."""
    return torch.randn(n, device="cuda:0" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16).mul_(1e-3)


def stage(host: HostParams, layer: int, rep: int, shapes: dict[str, torch.Size], source: torch.Tensor,
          stream: torch.cuda.Stream | None) -> None:
    for _ in range(N_STAGED):
        grads = {name: host.grad_buffer(shape, torch.bfloat16) for name, shape in shapes.items()}
        if stream is None:  # a CPU smoke run
            for buf in grads.values():
                buf.view(-1).copy_(source[:buf.numel()])
        else:
            with torch.cuda.stream(stream):
                for buf in grads.values():
                    buf.view(-1).copy_(source[:buf.numel()], non_blocking=True)
            stream.synchronize()
        host.stage_grads(layer, rep, grads)


def step_parts_s(host: HostParams, shapes: list[dict[str, torch.Size]], reps: int, cold: bool,
                 source: torch.Tensor, evict: torch.Tensor) -> list[tuple[float, float, float, float]]:
    """(STEP, accumulate, adam, refresh) seconds of every STEP after the first pass, layers stepped in
    turn. cold: all layers staged first, then the caches flushed by streaming `evict`, then the steps."""
    stream = torch.cuda.Stream(source.device) if source.is_cuda else None
    out = []
    for rep in range(reps + 1):
        if cold:
            for layer, layer_shapes in enumerate(shapes):
                stage(host, layer, rep, layer_shapes, source, stream)
            evict.add_(1.0)
        for layer, layer_shapes in enumerate(shapes):
            if not cold:
                stage(host, layer, rep, layer_shapes, source, stream)
            t = time.perf_counter()
            host.step(layer, rep, capture=False)
            total = time.perf_counter() - t
            if rep:
                out.append((total, *host.step_parts[-1][4:]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=3072, help="layer shape: e03's llama-1.8b/2.8b by default")
    ap.add_argument("--heads", type=int, default=24)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--mlp", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--pollers", type=int, default=8)
    ap.add_argument("--footprint-gib", type=float, default=45.0)
    a, out = probe_args(ap)
    host, shapes, _ = decoder_host_state(a.hidden, a.heads, a.kv_heads, a.mlp)
    source = staging_source(max(shape.numel() for shape in shapes[0].values()))
    evict = torch.zeros(2 * last_level_cache_bytes() // 4, dtype=torch.float32)
    footprint: list[torch.Tensor] = []
    rows = []

    def measure(name: str, cold: bool, pollers: int) -> None:
        with Pollers(pollers):
            times = step_parts_s(host, shapes, a.reps, cold, source, evict)
        med = [statistics.median(t[i] for t in times) * 1e3 for i in range(4)]
        rows.append({"condition": name, "cold": cold, "pollers": pollers,
                     "footprint_gib": len(footprint) * 1.0, "threads": torch.get_num_threads(),
                     "step_ms": [t[0] * 1e3 for t in times], "median_ms": dict(zip(
                         ("step", "accumulate", "adam", "refresh"), med, strict=True))})
        print(f"{name:28s} threads {torch.get_num_threads():2d}: STEP {med[0]:7.1f} ms  accumulate {med[1]:7.1f}  "
              f"adam {med[2]:6.1f}  refresh {med[3]:5.1f}  (min STEP {min(t[0] for t in times) * 1e3:.1f})", flush=True)

    measure("alone (hot)", False, 0)
    measure("cold", True, 0)
    measure(f"pollers {a.pollers}", False, a.pollers)
    t0 = time.perf_counter()
    for _ in range(int(a.footprint_gib)):  # touched, as a run's host state is at warm-up
        footprint.append(torch.ones(2**28, dtype=torch.float32))
    print(f"footprint {len(footprint)} GiB touched in {time.perf_counter() - t0:.1f} s", flush=True)
    measure("footprint", False, 0)
    measure(f"cold + pollers {a.pollers} + footprint", True, a.pollers)
    footprint.clear()
    measure("alone (hot), again", False, 0)
    (out / "step_conditions.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
