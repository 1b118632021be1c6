"""The reference `roundpipe` library on rpexec's model, for benchmarks/bench_rpexec.py: the same
Llama-style layers wrapped in the `nn.Sequential` the library takes, built fast at any size, run with
the library's own partitioner or with a manual partition (`rpsim export --library-plan`).

Fast initialisation: building the 8B model with a per-tensor CPU `normal_` in fp16 took more than four
minutes (issue 15); `normal_` runs at ~35-100 M values/s per thread. Here the layers are made on the
meta device, given fp16 storage, and filled by copying one block of 2^20 normal(0, std) values with a
per-tensor rotation: a memory copy (~600 M values/s per thread on the 2-core CI machine, 15x normal_),
deterministic, with the same per-tensor std as rpexec's init. The library's losses are not compared
with rpexec's.

`fill="normal"` draws every value instead, as rpexec's init does (fp32 normal_ per tensor in threads, then
cast): a GEMM's energy depends on its operands' bits, and at the GPUs' power cap energy sets the clock
(benchmarks/gemm_power.py), so a benchmark of two systems should give both the same kind of values."""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BLOCK = 2**20


def fast_fill_(t, block, index: int, std: float) -> None:
    """t <- the block rotated by a per-tensor offset, tiled, times std (1.0 fill for norms)."""
    import torch
    flat = t.view(-1)
    offset = (index * 7919) % BLOCK
    src = torch.cat([block[offset:], block[:offset]]).mul_(std).to(t.dtype)
    full, rest = divmod(flat.numel(), BLOCK)
    if full:
        flat[: full * BLOCK].view(full, BLOCK).copy_(src.expand(full, BLOCK))
    if rest:
        flat[full * BLOCK:].copy_(src[:rest])


FILLS = ("tiled", "normal")


def library_model(spec, seed: int = 0, fill: str = "tiled"):
    """nn.Sequential(embedding, decoder layers..., logits head) in fp16, filled `fill`-wise (module
    docstring)."""
    import torch
    from torch import nn

    from rpexec.model import skeleton_layers

    class Logits(nn.Module):  # the library applies loss_fn to the last module's output
        def __init__(self, head: nn.Module) -> None:
            super().__init__()
            self.norm, self.lm_head = head.norm, head.lm_head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lm_head(self.norm(x))

    layers = skeleton_layers(spec)
    model = nn.Sequential(*layers[:-1], Logits(layers[-1])).to(torch.float16).to_empty(device="cpu")
    block = torch.randn(BLOCK, generator=torch.Generator().manual_seed(seed))
    params = list(model.named_parameters())

    def fill_one(i: int) -> None:
        name, p = params[i]
        with torch.no_grad():
            if p.dim() == 1:
                p.fill_(1.0)
                return
            out_proj = name.split(".")[-2] in ("o_proj", "down_proj")
            std = 0.02 / math.sqrt(2 * spec.n_layers) if out_proj else 0.02
            if fill == "normal":
                g = torch.Generator().manual_seed(seed * 1_000_003 + i)
                p.copy_(torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=g))
            else:
                fast_fill_(p, block, i, std)

    with ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        list(pool.map(fill_one, range(len(params))))
    return model


def execute_plan(library_plan: dict[str, Any], model: Any = None):
    """The library's ModelExecutePlan from an exported library plan (rpsim.export.library_plan)."""
    from roundpipe import ModelExecutePlan
    try:
        plan = ModelExecutePlan()
    except TypeError:  # older releases build a default plan from the wrapped model
        plan = ModelExecutePlan(model, True)
    plan.fwd_plan = [range(a, b) for a, b in library_plan["fwd_plan"]]
    plan.bwd_plan = [range(a, b) for a, b in library_plan["bwd_plan"]]
    return plan


def run_library(spec, seq: int, global_batch: int, n_mb: int, iters: int, library_plan: dict | None = None,
                fill: str = "tiled") -> dict[str, Any]:
    """Iterations of the library (forward_backward + async step); its own partitioner unless a plan is
    given. Times: init (build + wrap), each iteration; the plan its auto-partitioner would pick now."""
    import torch
    import torch.nn.functional as F
    from roundpipe import RoundPipe, RoundPipeRunConfig
    from roundpipe.optim import Adam

    t0 = time.perf_counter()
    seq_model = library_model(spec, fill=fill)
    built_s = time.perf_counter() - t0
    config: dict[str, Any] = {"num_microbatch": n_mb}
    model = RoundPipe(seq_model, optim_dtype=torch.float32, model_run_config=RoundPipeRunConfig(**config))
    run_config = None
    if library_plan is not None:
        run_config = RoundPipeRunConfig(num_microbatch=n_mb, execute_plan=execute_plan(library_plan, model))
    opt = Adam(model.optim_parameters(), lr=1e-4)
    init_s = time.perf_counter() - t0

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1)) / n_mb

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, spec.vocab, (global_batch, seq + 1), generator=g)
    ids, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    times = []
    for _ in range(iters + 1):
        t = time.perf_counter()
        kwargs = {"run_config": run_config} if run_config is not None else {}
        model.forward_backward(input_args=(ids,), label=labels, loss_fn=loss_fn, **kwargs)
        model.step(lambda: (opt.step(), opt.zero_grad()))
        times.append(time.perf_counter() - t)
    model.synchronize()
    out: dict[str, Any] = {"iteration_times_s": times, "build_s": built_s, "init_s": init_s, "fill": fill}
    try:  # what the library's own partitioner picks from its measured layer times (documented API)
        from roundpipe import ModelExecutePlan
        auto = ModelExecutePlan.auto("fused", model)
        out["auto_plan"] = {"fwd_plan": [[r.start, r.stop] for r in auto.fwd_plan],
                            "bwd_plan": [[r.start, r.stop] for r in auto.bwd_plan]}
    except Exception as e:  # noqa: BLE001 - informational only; older releases lack it
        out["auto_plan"] = f"unavailable: {type(e).__name__}: {e}"
    return out
