"""GPU and host memory over time, derived from a plan and its timed trace by fixed rules (docs/memory.md):
model states, streamed weight and gradient buffers, activation working sets, boundary buffers and
host-resident activations. Pure: the same function serves every fidelity level."""
from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from operator import itemgetter

from rpsim.costs.layer_costs import WEIGHT_BYTES_PER_PARAM
from rpsim.ir import CPU, Action, Plan
from rpsim.ir.action import COMPUTE_KINDS, INPUT_GRAD_KINDS, WEIGHT_GRAD_KINDS
from rpsim.ir.jobs import jobs_of, residency
from rpsim.sim.action_costs import CostContext, boundary_bytes, saved_inside_bytes, transfer_bytes
from rpsim.sim.trace import Trace

# Feasibility margin over the live tensor bytes this module counts: what the caching allocator reserves
# beyond them (segments split by frees of other sizes) and the CUDA context, typically 5-15% in PyTorch.
# The counted bytes themselves need no factor: they match torch.cuda.max_memory_allocated of every e03
# run within a few percent (tests/test_e03_memory.py), so the factor applies to feasibility only.
ALLOCATOR_OVERHEAD = 1.1
Timed = dict[tuple[int, Action], tuple[float, float]]
_first, _second = itemgetter(0), itemgetter(1)


@dataclass(frozen=True)
class MemoryTimeline:
    """Per device (GPU index, or -1 for the host): (time_s, bytes in use) steps, raw (no overhead)."""

    steps: dict[int, list[tuple[float, float]]]

    def peak_bytes(self, device: int) -> float:
        return max(map(_second, self.steps.get(device, [])), default=0.0)  # (the scan in C)


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
    makes_grads: frozenset[tuple] = frozenset()
    if plan.level == "pcie" and not resident:
        makes_grads = _streamed_buffers(plan, ctx, timed, deltas)
    _activations(plan, ctx, timed, deltas, makes_grads)
    steps = {}
    for device, items in deltas.items():
        items.sort()  # by (time, delta): frees before allocations at the same instant
        levels = itertools.accumulate(map(_second, items), initial=0.0)  # 0.0 + d0 + d1 ...: a running sum
        next(levels)
        steps[device] = list(zip(map(_first, items), levels))
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
    else:  # fp32 master + Adam state, and the compute-dtype weights in two versions where the optimizer
        # updates them (the LOADs of consecutive iterations read different ones, rpexec.hostparams; frozen
        # LoRA base weights need one); the gradient staging is counted per download (_streamed_buffers)
        deltas[CPU].append((0.0, sum(x.weight_bytes + x.trainable_params * WEIGHT_BYTES_PER_PARAM + x.optim_bytes
                                     for x in layers)))


def _streamed_buffers(plan: Plan, ctx: CostContext, timed: Timed, deltas: dict) -> frozenset[tuple]:
    """A layer's weights live from its LOAD's start to its job's FREE's end; its gradient from the moment
    the job's first weight-gradient action computes it to its OFFLOAD's end, and in host memory from the
    OFFLOAD's start to its STEP's end. A B or FB computes each
    layer's gradient as its backward walk reaches the layer (autograd allocates .grad then), so the job's
    gradients are counted from that action's end, and the action's own working set carries the ones it
    has made before its peak (_shape); a W's from its start. Returns those B and FB actions, keyed
    (gpu, kind, stage, mb, it). Walks the timed transfers once, matching them to jobs by fields (not one
    Action built per job and layer)."""
    layers = ctx.costs.layers
    jobs: dict[tuple, tuple[int, int, float | None]] = {}  # (gpu, phase, stage, mb, it) -> lo, hi, grads from
    makes_grads = set()
    for gpu in range(plan.n_gpus):
        for job in jobs_of(plan, gpu):
            lo, hi = plan.partition.ranges(job.phase)[job.stage]
            first = next((a for a in job.actions if a.kind in WEIGHT_GRAD_KINDS), None)
            timed_first = timed.get((gpu, first)) if first is not None else None
            grads_from = None
            if first is not None and timed_first is not None:
                grads_from = timed_first[0] if first.kind == "W" else timed_first[1]
                if first.kind != "W":
                    makes_grads.add((gpu, first.kind, first.stage, first.mb, first.it))
            jobs[(gpu, job.phase, job.stage, job.first_mb, job.it)] = (lo, hi, grads_from)
    freed: dict[tuple, float] = {}
    stepped: dict[tuple, float] = {}  # (layer, it) -> end of the STEP that sums its staged gradients
    run_end = 0.0
    copies = []  # the LOADs and OFFLOADs, in timed order, for the pass that needs every FREE and STEP end
    for item in timed.items():  # one walk for the four
        (gpu, a), (_s, e) = item
        kind = a.kind
        run_end = max(run_end, e)
        if kind == "FREE":
            freed[(gpu, a.phase, a.stage, a.mb, a.it)] = e
        elif kind == "STEP":
            stepped[(a.chunk, a.it)] = e
        elif kind == "LOAD" or kind == "OFFLOAD":
            copies.append(item)
    for (gpu, a), (s, e) in copies:
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
            # its host staging buffer: from the download's start until the STEP that sums it has ended
            # (rpexec.hostparams.grad_buffer; a pool that never shrinks, so its peak is what it holds)
            deltas[CPU] += [(s, x.grad_bytes), (stepped.get((a.chunk, a.it), run_end), -x.grad_bytes)]
    return frozenset(makes_grads)


def _activations(plan: Plan, ctx: CostContext, timed: Timed, deltas: dict, makes_grads: frozenset[tuple]) -> None:
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
    # The bytes of a (kind, stage, whether it makes its job's gradients): the same every microbatch.
    shapes: dict[tuple[str, int, bool], _Shape] = {}
    for (gpu, a), (s, e) in computes:
        kind = a.kind
        stage, mb, it = a.stage, a.mb, a.it
        grads = bool(makes_grads) and (gpu, kind, stage, mb, it) in makes_grads
        shape = shapes.get((kind, stage, grads))  # type: ignore[arg-type]
        if shape is None:
            shape = shapes[(kind, stage, grads)] = _shape(ctx, kind, stage, keep_all, grads)  # type: ignore[index,arg-type]
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
                # The input gradient is the backward walk's last product (the bottom layer's): from the
                # end of the action, when its working set is gone, until moved.
                d += [(e, shape.out), (max(e, moved.get((gpu, "B", stage, mb, it), e)), -shape.out)]
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


def _shape(ctx: CostContext, kind: str, stage: int, keep_all: bool, makes_grads: bool = False) -> _Shape:
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
    grain = "kept" if keep_all else "stage" if whole_stage else "layer"
    work = backward_peak_bytes([x.activation_bytes for x in span], [x.backward_extra_bytes for x in span],
                               [x.grad_bytes for x in span] if makes_grads else [0.0] * len(span), grain)
    held = held_for_w(ctx, lo, hi, all_bytes) if kind == "I" else 0.0
    return _Shape(work, boundary_bytes(ctx, lo), held)


def backward_peak_bytes(saved: list[float], extra: list[float], grads: list[float], grain: str) -> float:
    """The most a backward over a stage's layers (bottom first in the lists) holds at once beyond what it
    keeps for later, walking the layers from the top as autograd does. At layer j it holds its saved
    activations and its backward's transient (extra[j]), with the gradients of the layers above already
    made (`grads`: zeros when the job's gradients exist already, from an earlier microbatch):
    - "stage": a whole-stage recompute (and FB) saved every layer's activations; layer j's backward frees
      its own, so the layers j and below are still held: with the head on top the peak is the head's
      loss backward over every saved activation, not that plus a layer's transient;
    - "layer": one layer recomputed at a time from its saved input: layer j's alone;
    - "kept": recompute none: the forward's saved activations are counted until the backward ends (F's
      work), the largest layer's on top as the transient; the gradients made before layer j add only what
      they exceed the activations the layers above have already freed."""
    best = 0.0
    saved_below = sum(saved)
    grads_above = saved_above = 0.0
    top = max(saved, default=0.0)
    for j in range(len(saved) - 1, -1, -1):
        if grain == "stage":
            level = saved_below + extra[j] + grads_above
        elif grain == "layer":
            level = saved[j] + extra[j] + grads_above
        else:
            level = top + max(0.0, grads_above - saved_above)
        best = max(best, level)
        saved_below -= saved[j]
        saved_above += saved[j]
        grads_above += grads[j]
    return best


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
