"""Split backward: I (input gradient) and W (weight gradients) as two actions, exact to the full B.

I builds the stage's autograd graph in segments whose inputs are detached leaves -- one segment per
pipeline layer when the stage recomputes (stage or layer grain), the whole stage when the forward kept
its graph (recompute none) -- and walks them from the top taking only the gradient of each segment's
input (torch.autograd.grad, the graph retained). It keeps, for W, each segment's output and the gradient
that reached it: exactly what rpsim.sim.memory holds from I to W (the retained graph's saved activations
and one output gradient per layer). W then backpropagates each segment's output gradient into that
segment's parameters only (autograd.backward(inputs=params)), accumulating .grad as B does. The split
follows the same idea as torch.distributed.pipelining's stage_backward_input / stage_backward_weight,
written here for rpexec's functional layers."""
from __future__ import annotations

import torch

from rpexec.device import DeviceState
from rpexec.handlers import Context, _range, _record_loss, _release_grads_if_last, _run, _weights
from rpsim.ir import Action

Segment = tuple[torch.Tensor | None, torch.Tensor, int, int]  # (input leaf, output, first layer, end layer)


def _segments(ctx: Context, dev: DeviceState, gpu: int, a: Action, lo: int, hi: int) -> list[Segment]:
    if ctx.plan.recompute == "none":
        leaf, out = dev.graphs.pop((a.stage, a.mb, a.it))
        return [(leaf, out, lo, hi)]
    segments: list[Segment] = []
    x = dev.take(("act", lo, a.mb, a.it)) if lo > 0 else torch.empty(0)
    with torch.enable_grad():
        for layer in range(lo, hi):
            if ctx.plan.recompute == "layer" and layer > lo:
                x = dev.take(("act", layer, a.mb, a.it))  # the forward saved every layer's input
            leaf = x.detach().requires_grad_(True) if layer > 0 else None
            out = _run(ctx, dev, gpu, a, layer, layer + 1, leaf if leaf is not None else x)
            segments.append((leaf, out, layer, layer + 1))
            x = out
    return segments


def backward_input(ctx: Context, gpu: int, a: Action) -> None:
    dev = ctx.devices[gpu]
    lo, hi = _range(ctx, a)
    segments = _segments(ctx, dev, gpu, a, lo, hi)
    grad: torch.Tensor | None = None if hi == ctx.n_layers else dev.take(("grad", hi, a.mb, a.it))
    kept: list[tuple[torch.Tensor, torch.Tensor | None, int, int]] = []
    with torch.enable_grad():
        for leaf, out, s_lo, s_hi in reversed(segments):
            if s_hi == ctx.n_layers:  # the head: each microbatch's mean loss counts 1 / n_mb of the batch loss
                if ctx.plan.recompute != "none":
                    _record_loss(ctx, a, out)  # recomputed: the same value F recorded
                out = out / ctx.plan.n_mb
            kept.append((out, grad, s_lo, s_hi))
            if leaf is None:
                grad = None
                continue
            (grad,) = torch.autograd.grad(out, leaf, grad, retain_graph=True)
    with dev.lock:
        dev.split[(a.stage, a.mb, a.it)] = kept
    if lo > 0:
        dev.put(("grad", lo, a.mb, a.it), grad)  # type: ignore[arg-type]


def backward_weight(ctx: Context, gpu: int, a: Action) -> None:
    dev = ctx.devices[gpu]
    with dev.lock:
        kept = dev.split.pop((a.stage, a.mb, a.it))
    with torch.enable_grad():
        for out, grad, s_lo, s_hi in kept:
            params = [p for layer in range(s_lo, s_hi) for p in _weights(ctx, dev, gpu, a, layer).values()]
            torch.autograd.backward(out, grad, inputs=params)
    _release_grads_if_last(ctx, gpu, a)
