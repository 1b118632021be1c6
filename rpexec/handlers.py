"""One function per action kind. Each runs on its lane's thread (and, on a GPU, inside its lane's CUDA
stream) after the runtime has made it wait for every dependency; each moves exactly the buffers that
rpsim's transfer_bytes counts."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from rpexec.bufferpool import BufferPool
from rpexec.device import DeviceState
from rpexec.hostparams import HostParams
from rpsim.ir import Action, Plan
from rpsim.ir.dataflow import saved_boundaries
from rpsim.ir.jobs import Job


@dataclass
class Context:
    plan: Plan
    layers: list[nn.Module]  # host modules: structure (and fp32 masters) for functional_call
    host: HostParams
    devices: dict[int, DeviceState]
    job_of: dict[tuple[int, Action], Job]
    jobs: dict[tuple[int, tuple], Job]  # (gpu, job key) -> job
    batch: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]  # (mb, it) -> (ids, labels) on host
    host_tensors: dict[tuple, torch.Tensor]
    resident: bool
    stateless: bool
    capture: bool
    losses: dict[tuple[int, int], torch.Tensor]
    lock: Any
    act_pool: BufferPool  # host buffers for activations and activation gradients (ACT_OUT / ACT_IN)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def job_of_key(self, gpu: int, a: Action) -> Job:
        """The job a LOAD / FREE / OFFLOAD serves: same phase, stage, first microbatch and iteration."""
        return self.jobs[(gpu, (a.phase, a.stage, a.mb, a.it))]


def _range(ctx: Context, a: Action) -> tuple[int, int]:
    return ctx.plan.partition.ranges(a.partition_phase)[a.stage]  # type: ignore[index]


def _weights(ctx: Context, dev: DeviceState, gpu: int, a: Action, layer: int) -> dict[str, torch.Tensor]:
    if ctx.resident:
        return dev.resident[layer]
    return dev.weights[(ctx.job_of[(gpu, a)].key, layer)]


def _saved_boundaries(ctx: Context, lo: int, hi: int) -> set[int]:
    return set(saved_boundaries(ctx.plan.partition, ctx.plan.recompute, ctx.stateless, lo, hi))


def _run(ctx: Context, dev: DeviceState, gpu: int, a: Action, lo: int, hi: int, x: torch.Tensor,
         save: set[int] | None = None) -> torch.Tensor:
    ids, labels = ctx.batch(a.mb, a.it)  # type: ignore[arg-type]
    for layer in range(lo, hi):
        w = _weights(ctx, dev, gpu, a, layer)
        module = dev.skeleton[layer]
        if layer == 0:
            x = functional_call(module, w, (ids.to(dev.device, non_blocking=True),))
        elif layer == ctx.n_layers - 1:
            x = functional_call(module, w, (x, labels.to(dev.device, non_blocking=True)))
        else:
            x = functional_call(module, w, (x,))
        if save and layer + 1 in save:
            dev.put(("act", layer + 1, a.mb, a.it), x.detach())
    return x


def forward(ctx: Context, gpu: int, a: Action) -> None:
    dev = ctx.devices[gpu]
    lo, hi = _range(ctx, a)
    keep_input = not ctx.stateless and ctx.plan.recompute != "none"
    x = dev.take(("act", lo, a.mb, a.it), keep=keep_input) if lo > 0 else torch.empty(0)
    if ctx.plan.recompute == "none":
        leaf = x.detach().requires_grad_(True) if lo > 0 else None
        with torch.enable_grad():
            out = _run(ctx, dev, gpu, a, lo, hi, leaf if leaf is not None else x)
        dev.graphs[(a.stage, a.mb, a.it)] = (leaf, out)
    else:
        with torch.no_grad():
            out = _run(ctx, dev, gpu, a, lo, hi, x, _saved_boundaries(ctx, lo, hi))
    if hi < ctx.n_layers:
        dev.put(("act", hi, a.mb, a.it), out.detach())
    else:
        _record_loss(ctx, a, out)


def _record_loss(ctx: Context, a: Action, loss: torch.Tensor) -> None:
    with ctx.lock:
        ctx.losses[(a.mb, a.it)] = loss.detach()  # type: ignore[index]


def _backprop(ctx: Context, out: torch.Tensor, hi: int, dev: DeviceState, a: Action) -> None:
    if hi == ctx.n_layers:  # the head: each microbatch's mean loss counts 1 / n_mb of the batch loss
        (out / ctx.plan.n_mb).backward()
    else:
        out.backward(dev.take(("grad", hi, a.mb, a.it)))


def backward(ctx: Context, gpu: int, a: Action) -> None:
    dev = ctx.devices[gpu]
    lo, hi = _range(ctx, a)
    if ctx.plan.recompute == "none":
        leaf, out = dev.graphs.pop((a.stage, a.mb, a.it))
        _backprop(ctx, out, hi, dev, a)
        grad_in = leaf.grad if leaf is not None else None
    elif ctx.plan.recompute == "layer" and a.kind != "FB":  # FB's forward is its recompute
        grad_in = _backward_per_layer(ctx, dev, gpu, a, lo, hi)
    else:
        x = dev.take(("act", lo, a.mb, a.it)) if lo > 0 else torch.empty(0)
        leaf = x.detach().requires_grad_(True) if lo > 0 else None
        with torch.enable_grad():
            out = _run(ctx, dev, gpu, a, lo, hi, leaf if leaf is not None else x)
            if hi == ctx.n_layers and a.kind == "FB":
                _record_loss(ctx, a, out)
            _backprop(ctx, out, hi, dev, a)
        grad_in = leaf.grad if leaf is not None else None
    if lo > 0:
        dev.put(("grad", lo, a.mb, a.it), grad_in)  # type: ignore[arg-type]
    _release_grads_if_last(ctx, gpu, a)


def _backward_per_layer(ctx: Context, dev: DeviceState, gpu: int, a: Action, lo: int, hi: int) -> torch.Tensor | None:
    """Layer-grain recompute (roundpipe's recompute_grain="layer"): each layer from its saved input."""
    grad: torch.Tensor | None = None
    for layer in range(hi - 1, lo - 1, -1):
        x = dev.take(("act", layer, a.mb, a.it)) if layer > 0 else torch.empty(0)
        leaf = x.detach().requires_grad_(True) if layer > 0 else None
        with torch.enable_grad():
            out = _run(ctx, dev, gpu, a, layer, layer + 1, leaf if leaf is not None else x)
            if layer == ctx.n_layers - 1:
                if a.kind == "FB":
                    _record_loss(ctx, a, out)
                (out / ctx.plan.n_mb).backward()
            else:
                out.backward(grad if grad is not None else dev.take(("grad", hi, a.mb, a.it)))
        grad = leaf.grad if leaf is not None else None
    return grad


def fused(ctx: Context, gpu: int, a: Action) -> None:
    """RoundPipe's fused last stage: forward (which doubles as the recompute) and backward together."""
    backward(ctx, gpu, a)


def _release_grads_if_last(ctx: Context, gpu: int, a: Action) -> None:
    """After a streamed job's last backward, move its parameter gradients aside for the OFFLOADs, so the
    job's FREE can drop the weights while the downloads are still queued."""
    if ctx.resident:
        return
    job = ctx.job_of[(gpu, a)]
    if a != job.actions[-1]:
        return
    dev = ctx.devices[gpu]
    lo, hi = ctx.plan.partition.ranges(job.phase)[job.stage]
    for layer in range(lo, hi):
        params = dev.weights[(job.key, layer)]
        dev.pending_grads[(job.key, layer)] = {
            n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in params.items()}
