"""GPU and host memory over time, derived from a plan and its timed trace by fixed rules (docs/memory.md):
model states, streamed weight and gradient buffers, activation working sets, boundary buffers and
host-resident activations. Pure: the same function serves every fidelity level."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rpsim.ir import CPU, Action, Plan
from rpsim.ir.action import INPUT_GRAD_KINDS
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
    from rpsim.ir import parse_action
    return {(e.gpu, parse_action(e.action)): (e.start_s, e.end_s) for e in trace.events}


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
        level, out = 0.0, []
        for t, d in items:
            level += d
            out.append((t, level))
        steps[device] = out
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
    layers = ctx.costs.layers
    keep_all = plan.recompute == "none"
    last_use: dict[tuple[int, int], float] = defaultdict(float)  # (mb, it) -> end of its last compute
    # Keyed by (gpu, partition phase, stage, mb, it), not by a guessed producer Action: the producer of
    # a backward-phase output may be B, FB (RoundPipe's fused stage) or I, and guessing "B" made the
    # fused stage's output gradient (and its upload) look freed when FB ended, before it was moved.
    moved: dict[tuple, float] = {}  # producer -> end of the transfer that moved its output
    used: dict[tuple, float] = defaultdict(float)  # consumer -> end of the computes that read an upload
    for (gpu, a), (_s, e) in timed.items():
        if a.kind in ("ACT_OUT", "SEND"):
            key = (gpu, a.phase, a.stage, a.mb, a.it)
            moved[key] = max(moved.get(key, 0.0), e)
        elif a.is_compute:
            key = (gpu, a.partition_phase, a.stage, a.mb, a.it)
            used[key] = max(used[key], e)
    # lo, hi, the stage's activations (sum, max), the no-grad forward's working set, and its backward
    # working sets: the whole stage at once (sum plus the largest backward transient) or one layer at a
    # time (the largest activations plus transient of one layer).
    stages: dict[tuple[str, int], tuple[int, int, float, float, float, float, float]] = {}
    for (gpu, a), (s, e) in timed.items():
        if not a.is_compute:
            continue
        phase = a.partition_phase
        stage = stages.get((phase, a.stage))  # type: ignore[arg-type]
        if stage is None:
            lo, hi = ctx.plan.partition.ranges(phase)[a.stage]  # type: ignore[index]
            span = layers[lo:hi]
            all_bytes = sum(x.activation_bytes for x in span)
            stage = stages[(phase, a.stage)] = (  # type: ignore[index]
                lo, hi, all_bytes, max(x.activation_bytes for x in span),
                max(x.forward_transient_bytes for x in span),
                all_bytes + max(x.backward_extra_bytes for x in span),
                max(x.activation_bytes + x.backward_extra_bytes for x in span))
        lo, hi, all_bytes, max_bytes, forward_work, whole_backward, layer_backward = stage
        last_use[(a.mb, a.it)] = max(last_use[(a.mb, a.it)], e)  # type: ignore[index]
        if a.kind == "F":
            if keep_all:
                b_end = _backward_end(timed, gpu, a)
                deltas[gpu] += [(s, all_bytes), (b_end, -all_bytes)]
            else:
                deltas[gpu] += [(s, forward_work), (e, -forward_work)]
                # Inputs saved for the recompute besides the stage's own: every layer's with layer grain
                # (rpexec handlers._saved_boundaries), a backward stage's start inside a forward stage
                # with RoundPipe's asymmetric partition. Stateless GPUs download them with the output.
                inner = saved_inside_bytes(ctx, lo, hi)
                if not ctx.stateless:  # the stage input and the inner inputs stay for the recompute
                    keep = boundary_bytes(ctx, lo) + inner
                    deltas[gpu] += [(s, keep), (_backward_end(timed, gpu, a), -keep)]
                    inner = 0.0
            out = boundary_bytes(ctx, hi) + (0.0 if keep_all else inner)
            deltas[gpu] += [(s, out), (moved.get((gpu, "F", a.stage, a.mb, a.it), e), -out)]
        else:
            # A backward recomputes its whole stage at once (stage grain, and the fused stage FB, whose
            # forward is the recompute), or one layer at a time from saved inputs (layer grain: rpexec
            # handlers._backward_per_layer; the roundpipe library's run_backward, recompute_grain="layer").
            whole_stage = not keep_all and (a.kind == "FB" or (a.kind in ("B", "I") and ctx.plan.recompute != "layer"))
            if keep_all:  # the saved activations are held since F; the largest transient on top
                work = max_bytes
            else:
                work = whole_backward if whole_stage else layer_backward
            deltas[gpu] += [(s, work), (e, -work)]
            if a.kind != "W":  # W computes weight gradients only; its stage's I produced the input gradient
                out = boundary_bytes(ctx, lo)
                deltas[gpu] += [(s, out), (moved.get((gpu, "B", a.stage, a.mb, a.it), e), -out)]
            if a.kind == "I":
                w_end = timed[(gpu, Action("W", a.stage, a.mb, a.it))][1]
                held = held_for_w(ctx, lo, hi, all_bytes)
                deltas[gpu] += [(e, held), (w_end, -held)]
    sizes: dict[tuple, float] = {}  # bytes by (kind, stage, phase): the same for every microbatch
    for (gpu, a), (s, e) in timed.items():
        if a.kind in ("ACT_IN", "ACT_OUT"):
            n = sizes.get((a.kind, a.stage, a.phase))
            if n is None:
                n = sizes[(a.kind, a.stage, a.phase)] = transfer_bytes(ctx, a)
            if a.kind == "ACT_IN":  # held until the compute that reads it ends (FB too, not only B)
                deltas[gpu] += [(s, n), (used.get((gpu, a.phase, a.stage, a.mb, a.it), e), -n)]
            else:
                deltas[CPU] += [(s, n), (last_use[(a.mb, a.it)], -n)]  # type: ignore[index]


def held_for_w(ctx: CostContext, lo: int, hi: int, stage_activation_bytes: float) -> float:
    """What a split backward keeps from its I to its W (rpexec.split_backward): the stage's autograd graph
    with its saved activations (recomputed by I unless the forward kept them), and the gradient reaching
    each segment's output: one per layer under recomputation, the stage output's without."""
    if ctx.plan.recompute == "none":
        grads = boundary_bytes(ctx, hi)
    else:
        grads = sum(boundary_bytes(ctx, b) for b in range(lo + 1, hi + 1))
    return stage_activation_bytes + grads


def _backward_end(timed: Timed, gpu: int, f: Action) -> float:
    for kind in INPUT_GRAD_KINDS:
        key = (gpu, Action(kind, f.stage, f.mb, f.it))
        if key in timed:
            return timed[key][1]
    return timed[(gpu, f)][1]
