"""GPU and host memory over time, derived from a plan and its timed trace by fixed rules (docs/memory.md):
model states, streamed weight and gradient buffers, activation working sets, boundary buffers and
host-resident activations. Pure: the same function serves every fidelity level."""
from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from rpsim.ir import CPU, Action, Plan
from rpsim.ir.action import COMPUTE_KINDS, INPUT_GRAD_KINDS
from rpsim.ir.jobs import jobs_of, residency
from rpsim.sim.action_costs import CostContext, boundary_bytes, saved_inside_bytes, transfer_bytes
from rpsim.sim.trace import Trace

# Feasibility margin over the live tensor bytes this module counts: what the caching allocator reserves
# beyond them (segments split by frees of other sizes) and the CUDA context, typically 5-15% in PyTorch.
# The counted bytes themselves need no factor: they match torch.cuda.max_memory_allocated of every e03
# run within a few percent (tests/test_e03_memory.py), so the factor applies to feasibility only.
ALLOCATOR_OVERHEAD = 1.1
Timed = dict[tuple[int, Action], tuple[float, float]]


@dataclass(frozen=True)
class MemoryTimeline:
    """Per device (GPU index, or -1 for the host): (time_s, bytes in use) steps, raw (no overhead)."""

    steps: dict[int, list[tuple[float, float]]]

    def peak_bytes(self, device: int) -> float:
        return max((b for _, b in self.steps.get(device, [])), default=0.0)


def timed_actions(plan: Plan, trace: Trace) -> Timed:
    """(gpu, action) -> (start, end) of a trace of `plan`. Actions are matched to the plan's by their text
    (parse_action(str(a)) == a), parsing only text the plan does not hold: parsing every event was half
    of the memory pass of a list-timed search estimate."""
    from rpsim.ir import parse_action
    by_text = {(gpu, str(a)): a for (gpu, _lane), actions in plan.lanes.items() for a in actions}
    out: Timed = {}
    for e in trace.events:
        a = by_text.get((e.gpu, e.action))
        out[(e.gpu, a if a is not None else parse_action(e.action))] = (e.start_s, e.end_s)
    return out


def memory_timeline(plan: Plan, trace: Trace, ctx: CostContext, timed: Timed | None = None) -> MemoryTimeline:
    """`timed`, when given (the engine's), must hold the same times as `trace`; it saves parsing it."""
    timed = timed if timed is not None else timed_actions(plan, trace)
    deltas: dict[int, list[tuple[float, float]]] = defaultdict(list)
    resident = residency(plan) == "resident" and plan.level == "pcie"
    _model_states(plan, ctx, resident, deltas)
    if plan.level == "pcie" and not resident:
        _streamed_buffers(plan, ctx, timed, deltas)
    _activations(plan, ctx, timed, deltas)
    steps = {}
    for device, items in deltas.items():
        items.sort()  # by (time, delta): frees before allocations at the same instant
        levels = itertools.accumulate((d for _, d in items), initial=0.0)  # 0.0 + d0 + d1 ...: a running sum
        next(levels)
        steps[device] = list(zip((t for t, _ in items), levels))
    return MemoryTimeline(steps)


def _model_states(plan: Plan, ctx: CostContext, resident: bool, deltas: dict) -> None:
    layers = ctx.costs.layers
    if plan.level != "pcie":
        return
    if resident:
        for gpu in range(plan.n_gpus):
            stages = {a.stage for a in plan.lane(gpu, "compute") if a.is_compute}
            total = sum(x.weight_bytes + x.grad_bytes + x.optim_bytes
                        for s in stages for x in layers[slice(*plan.partition.fwd[s])])  # type: ignore[index]
            deltas[gpu].append((0.0, total))
    else:  # fp16 weights and gradient buffers pinned, fp32 master + Adam state, all in host memory
        deltas[CPU].append((0.0, sum(x.weight_bytes + x.grad_bytes + x.optim_bytes for x in layers)))


def _streamed_buffers(plan: Plan, ctx: CostContext, timed: Timed, deltas: dict) -> None:
    """A layer's weights live from its LOAD's start to its job's FREE's end; its gradient from the job's
    first backward start to its OFFLOAD's end. Walks the timed transfers once, matching them to jobs by
    fields (not one Action built per job and layer)."""
    layers = ctx.costs.layers
    jobs: dict[tuple, tuple[int, int, float | None]] = {}  # (gpu, phase, stage, mb, it) -> lo, hi, bwd start
    for gpu in range(plan.n_gpus):
        for job in jobs_of(plan, gpu):
            lo, hi = plan.partition.ranges(job.phase)[job.stage]
            first_bwd = next((a for a in job.actions if a.kind != "F"), None)
            timed_bwd = timed.get((gpu, first_bwd)) if first_bwd is not None else None
            bwd_start = timed_bwd[0] if timed_bwd is not None else None
            jobs[(gpu, job.phase, job.stage, job.first_mb, job.it)] = (lo, hi, bwd_start)
    freed = {(gpu, a.phase, a.stage, a.mb, a.it): e
             for (gpu, a), (_s, e) in timed.items() if a.kind == "FREE"}
    for (gpu, a), (s, e) in timed.items():
        if a.kind not in ("LOAD", "OFFLOAD"):
            continue
        key = (gpu, a.phase, a.stage, a.mb, a.it)
        span = jobs.get(key)
        if span is None or not span[0] <= a.chunk < span[1]:  # type: ignore[operator]
            continue
        x = layers[a.chunk]  # type: ignore[index]
        if a.kind == "LOAD":
            deltas[gpu] += [(s, x.weight_bytes), (freed[key], -x.weight_bytes)]
        else:
            assert span[2] is not None, f"{a} offloads gradients of a job with no backward"
            deltas[gpu] += [(span[2], x.grad_bytes), (e, -x.grad_bytes)]


def _activations(plan: Plan, ctx: CostContext, timed: Timed, deltas: dict) -> None:
    keep_all = plan.recompute == "none"
    last_use: dict[tuple[int, int], float] = defaultdict(float)  # (mb, it) -> end of its last compute
    # Keyed by (gpu, partition phase, stage, mb, it), not by a guessed producer Action: the producer of
    # a backward-phase output may be B, FB (RoundPipe's fused stage) or I, and guessing "B" made the
    # fused stage's output gradient (and its upload) look freed when FB ended, before it was moved.
    moved: dict[tuple, float] = {}  # producer -> end of the transfer that moved its output
    used: dict[tuple, float] = defaultdict(float)  # consumer -> end of the computes that read an upload
    ends: dict[tuple, float] = {}  # compute actions' ends by (gpu, kind, stage, mb, it, phase, chunk, peer)
    computes, activations = [], []  # the timed items each pass below reads (one walk over all of them)
    for item in timed.items():
        (gpu, a), (_s, e) = item
        kind = a.kind
        if kind in ("ACT_OUT", "SEND"):
            key = (gpu, a.phase, a.stage, a.mb, a.it)
            moved[key] = max(moved.get(key, 0.0), e)
            if kind == "ACT_OUT":
                activations.append(item)
        elif kind in _COMPUTE:
            key = (gpu, a.partition_phase, a.stage, a.mb, a.it)
            used[key] = max(used[key], e)
            ends[(gpu, kind, a.stage, a.mb, a.it, a.phase, a.chunk, a.peer)] = e
            last_use[(a.mb, a.it)] = max(last_use[(a.mb, a.it)], e)  # type: ignore[index]
            computes.append(item)
        elif kind == "ACT_IN":
            activations.append(item)
    shapes: dict[tuple[str, int], _Shape] = {}  # the bytes of a (kind, stage): the same every microbatch
    for (gpu, a), (s, e) in computes:
        kind = a.kind
        stage, mb, it = a.stage, a.mb, a.it
        shape = shapes.get((kind, stage))  # type: ignore[arg-type]
        if shape is None:
            shape = shapes[(kind, stage)] = _shape(ctx, kind, stage, keep_all)  # type: ignore[index,arg-type]
        d = deltas[gpu]
        if kind == "F":
            if keep_all:
                b_end = _backward_end(ends, timed, gpu, a)
                d += [(s, shape.work), (b_end, -shape.work)]
            else:
                d += [(s, shape.work), (e, -shape.work)]
                if not ctx.stateless:  # the stage input and the inner inputs stay for the recompute
                    d += [(s, shape.keep), (_backward_end(ends, timed, gpu, a), -shape.keep)]
            d += [(s, shape.out), (moved.get((gpu, "F", stage, mb, it), e), -shape.out)]
        else:
            d += [(s, shape.work), (e, -shape.work)]
            if kind != "W":  # W computes weight gradients only; its stage's I produced the input gradient
                d += [(s, shape.out), (moved.get((gpu, "B", stage, mb, it), e), -shape.out)]
            if kind == "I":
                w_end = ends[(gpu, "W", stage, mb, it, None, None, None)]
                d += [(e, shape.keep), (w_end, -shape.keep)]
    sizes: dict[tuple, float] = {}  # bytes by (kind, stage, phase): the same for every microbatch
    for (gpu, a), (s, e) in activations:
        n = sizes.get((a.kind, a.stage, a.phase))
        if n is None:
            n = sizes[(a.kind, a.stage, a.phase)] = transfer_bytes(ctx, a)
        if a.kind == "ACT_IN":  # held until the compute that reads it ends (FB too, not only B)
            deltas[gpu] += [(s, n), (used.get((gpu, a.phase, a.stage, a.mb, a.it), e), -n)]
        else:
            deltas[CPU] += [(s, n), (last_use[(a.mb, a.it)], -n)]  # type: ignore[index]


_COMPUTE = frozenset(COMPUTE_KINDS)


@dataclass(frozen=True)
class _Shape:
    """The bytes one compute action of a (kind, stage) holds, whatever its microbatch: `work` from its start
    to its end (the saved activations until the backward, when nothing is recomputed); `out` its output
    until moved (F: the stage output, plus inner saved inputs on stateless GPUs; backward: the input
    gradient); `keep` F: the inputs kept for the recompute, I: what it holds for its W."""
    work: float
    out: float
    keep: float


def _shape(ctx: CostContext, kind: str, stage: int, keep_all: bool) -> _Shape:
    layers = ctx.costs.layers
    lo, hi = ctx.plan.partition.ranges("F" if kind == "F" else "B")[stage]
    span = layers[lo:hi]
    all_bytes = sum(x.activation_bytes for x in span)
    if kind == "F":
        if keep_all:
            return _Shape(all_bytes, boundary_bytes(ctx, hi) + 0.0, 0.0)
        # Inputs saved for the recompute besides the stage's own: every layer's with layer grain
        # (rpexec handlers._saved_boundaries), a backward stage's start inside a forward stage with
        # RoundPipe's asymmetric partition. Stateless GPUs download them with the output.
        inner = saved_inside_bytes(ctx, lo, hi)
        keep = 0.0
        if not ctx.stateless:
            keep = boundary_bytes(ctx, lo) + inner
            inner = 0.0
        return _Shape(max(x.forward_transient_bytes for x in span), boundary_bytes(ctx, hi) + inner, keep)
    # A backward recomputes its whole stage at once (stage grain, and the fused stage FB, whose forward is
    # the recompute), or one layer at a time from saved inputs (layer grain: rpexec
    # handlers._backward_per_layer; the roundpipe library's run_backward, recompute_grain="layer").
    whole_stage = not keep_all and (kind == "FB" or (kind in ("B", "I") and ctx.plan.recompute != "layer"))
    if keep_all:  # the saved activations are held since F; the largest transient on top
        work = max(x.activation_bytes for x in span)
    elif whole_stage:
        work = all_bytes + max(x.backward_extra_bytes for x in span)
    else:
        work = max(x.activation_bytes + x.backward_extra_bytes for x in span)
    held = held_for_w(ctx, lo, hi, all_bytes) if kind == "I" else 0.0
    return _Shape(work, boundary_bytes(ctx, lo), held)


def held_for_w(ctx: CostContext, lo: int, hi: int, stage_activation_bytes: float) -> float:
    """What a split backward keeps from its I to its W (rpexec.split_backward): the stage's autograd graph
    with its saved activations (recomputed by I unless the forward kept them), and the gradient reaching
    each segment's output: one per layer under recomputation, the stage output's without."""
    if ctx.plan.recompute == "none":
        grads = boundary_bytes(ctx, hi)
    else:
        grads = sum(boundary_bytes(ctx, b) for b in range(lo + 1, hi + 1))
    return stage_activation_bytes + grads


def _backward_end(ends: dict[tuple, float], timed: Timed, gpu: int, f: Action) -> float:
    for kind in INPUT_GRAD_KINDS:
        e = ends.get((gpu, kind, f.stage, f.mb, f.it, None, None, None))
        if e is not None:
            return e
    return timed[(gpu, f)][1]
