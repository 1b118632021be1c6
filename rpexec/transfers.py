"""Handlers of transfer, optimizer and memory actions: LOAD / FREE / OFFLOAD (weights and gradients),
ACT_OUT / ACT_IN (activations through host memory), SEND / RECV (P2P), STEP (CPU or GPU Adam)."""
from __future__ import annotations

import torch

from rpexec.bufferpool import BufferPool
from rpexec.device import DeviceState
from rpexec.handlers import Context, _range, _saved_boundaries
from rpsim.ir import Action


def _to_host(pool: BufferPool, t: torch.Tensor, dev: DeviceState) -> torch.Tensor:
    """Download into a reused (pinned, on CUDA) host buffer; asynchronous on the lane's stream."""
    out = pool.acquire(t.shape, t.dtype)
    out.copy_(t.detach(), non_blocking=dev.is_cuda)
    if dev.is_cuda:
        t.record_stream(torch.cuda.current_stream(dev.device))
    return out


def _to_device(t: torch.Tensor, dev: DeviceState) -> torch.Tensor:
    if not dev.is_cuda:
        return t.clone()
    return t.to(dev.device, non_blocking=True)


def _upload_and_release(pool: BufferPool, t: torch.Tensor, dev: DeviceState) -> torch.Tensor:
    """Upload a host activation, then hand its buffer back once the copy engine has read it."""
    out = _to_device(t, dev)
    guard = None
    if dev.is_cuda:
        guard = torch.cuda.Event()
        guard.record(torch.cuda.current_stream(dev.device))
    pool.release(t, guard)
    return out


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def load(ctx: Context, gpu: int, a: Action) -> int:
    dev = ctx.devices[gpu]
    job = ctx.job_of_key(gpu, a)
    needs_grad = any(x.kind != "F" for x in job.actions)
    params = {n: _to_device(t, dev).requires_grad_(needs_grad)
              for n, t in ctx.host.weights_for(a.chunk, a.it).items()}  # type: ignore[arg-type]
    with dev.lock:
        dev.weights[(job.key, a.chunk)] = params
    return _nbytes(params.values())


def free(ctx: Context, gpu: int, a: Action) -> None:
    dev = ctx.devices[gpu]
    key = (a.phase, a.stage, a.mb, a.it)
    with dev.lock:
        dropped = [dev.weights.pop(k) for k in [k for k in dev.weights if k[0] == key]]
    if dev.is_cuda:  # uploaded on the param_h2d stream, read on this (compute) stream
        stream = torch.cuda.current_stream(dev.device)
        for params in dropped:
            for t in params.values():
                t.record_stream(stream)


def offload(ctx: Context, gpu: int, a: Action) -> int:
    dev = ctx.devices[gpu]
    key = (a.phase, a.stage, a.mb, a.it)
    with dev.lock:
        grads = dev.pending_grads.pop((key, a.chunk))
    ctx.host.stage_grads(a.chunk, a.it, {n: _to_host(ctx.host.grad_pool, g, dev) for n, g in grads.items()})  # type: ignore[arg-type]
    return _nbytes(grads.values())


def act_out(ctx: Context, gpu: int, a: Action) -> int:
    dev = ctx.devices[gpu]
    lo, hi = _range(ctx, a)
    if a.phase == "F":
        keys = [("act", hi, a.mb, a.it)] if hi < ctx.n_layers else []
        if ctx.stateless:  # stateless GPUs keep nothing: saved inputs go to host memory too
            keys += [("act", b, a.mb, a.it) for b in sorted(_saved_boundaries(ctx, lo, hi))]
    else:
        keys = [("grad", lo, a.mb, a.it)]
    moved = 0
    for key in keys:
        t = dev.take(key)
        moved += _nbytes([t])
        with ctx.lock:
            ctx.host_tensors[key] = _to_host(ctx.act_pool, t, dev)
    return moved


def act_in(ctx: Context, gpu: int, a: Action) -> int:
    dev = ctx.devices[gpu]
    lo, hi = _range(ctx, a)
    bwd_starts = {b for b, _ in ctx.plan.partition.bwd}
    wanted: list[tuple[tuple, bool]] = []  # (key, last reader?)
    if a.phase == "F" or a.stage == len(ctx.plan.partition.bwd) - 1 and ctx.plan.partition.fused:
        saved_later = a.phase == "F" and ctx.stateless and (lo in bwd_starts or ctx.plan.recompute == "layer")
        wanted.append((("act", lo, a.mb, a.it), not saved_later))
    else:
        if hi < ctx.n_layers:
            wanted.append((("grad", hi, a.mb, a.it), True))
        if ctx.stateless:
            if lo > 0:
                wanted.append((("act", lo, a.mb, a.it), True))
            if ctx.plan.recompute == "layer":
                wanted += [(("act", b, a.mb, a.it), True) for b in range(lo + 1, hi)]
    moved = 0
    for key, last in wanted:
        with ctx.lock:
            t = ctx.host_tensors.pop(key) if last else ctx.host_tensors[key]
        moved += _nbytes([t])
        dev.put(key, _upload_and_release(ctx.act_pool, t, dev) if last else _to_device(t, dev))
    return moved


def send(ctx: Context, gpu: int, a: Action) -> int:
    src, dst = ctx.devices[gpu], ctx.devices[a.peer]  # type: ignore[index]
    lo, hi = _range(ctx, a)
    key = ("act", hi, a.mb, a.it) if a.phase == "F" else ("grad", lo, a.mb, a.it)
    t = src.take(key)
    if src.is_cuda:
        moved = t.to(dst.device, non_blocking=True)
        t.record_stream(torch.cuda.current_stream(src.device))
    else:
        moved = t.clone()
    dst.put(key, moved)
    return _nbytes([t])


def recv(ctx: Context, gpu: int, a: Action) -> None:
    """The data arrived with its SEND (which this action waits for); nothing left to do."""


def step(ctx: Context, gpu: int, a: Action) -> None:
    if a.chunk is not None:
        ctx.host.step(a.chunk, a.it, ctx.capture)
        return
    dev = ctx.devices[gpu]  # a resident stage's Adam on its GPU
    lo, hi = ctx.plan.partition.fwd[a.stage]  # type: ignore[index]
    for layer in range(lo, hi):
        params, master = dev.resident[layer], dev.resident_master[layer]
        for n, p in params.items():
            master[n].grad = p.grad.float() if p.grad is not None else torch.zeros_like(master[n])
        if ctx.capture and a.it == 0:
            with ctx.lock:
                ctx.host.captured[layer] = {n: m.grad.detach().cpu().clone() for n, m in master.items()}  # type: ignore[union-attr]
        dev.resident_optim[layer].step()
        dev.resident_optim[layer].zero_grad(set_to_none=True)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(master[n])
                p.grad = None
