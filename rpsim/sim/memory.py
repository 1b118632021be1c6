"""GPU and host memory over time, derived from a plan and its timed trace by fixed rules (docs/memory.md):
model states, streamed weight and gradient buffers, activation working sets, boundary buffers and
host-resident activations. Pure: the same function serves every fidelity level."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rpsim.ir import CPU, Action, Plan
from rpsim.ir.jobs import jobs_of, stages_are_resident
from rpsim.sim.action_costs import CostContext, boundary_bytes, transfer_bytes
from rpsim.sim.trace import Trace

ALLOCATOR_OVERHEAD = 1.1  # PyTorch caching-allocator fragmentation and CUDA context, typically 5-15%
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


def memory_timeline(plan: Plan, trace: Trace, ctx: CostContext) -> MemoryTimeline:
    timed = timed_actions(plan, trace)
    deltas: dict[int, list[tuple[float, float]]] = defaultdict(list)
    resident = stages_are_resident(plan) and plan.options.get("weights") != "streamed" and plan.level == "pcie"
    _model_states(plan, ctx, resident, deltas)
    if plan.level == "pcie" and not resident:
        _streamed_buffers(plan, ctx, timed, deltas)
    _activations(plan, ctx, timed, deltas)
    steps = {}
    for device, items in deltas.items():
        items.sort(key=lambda x: (x[0], x[1]))  # frees before allocations at the same instant
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
    layers = ctx.costs.layers
    for gpu in range(plan.n_gpus):
        for job in jobs_of(plan, gpu):
            lo, hi = plan.partition.ranges(job.phase)[job.stage]
            free = (gpu, Action("FREE", job.stage, job.first_mb, job.it, job.phase))
            for layer in range(lo, hi):
                load = (gpu, Action("LOAD", job.stage, job.first_mb, job.it, job.phase, chunk=layer))
                if load in timed:
                    deltas[gpu].append((timed[load][0], layers[layer].weight_bytes))
                    deltas[gpu].append((timed[free][1], -layers[layer].weight_bytes))
                off = (gpu, Action("OFFLOAD", job.stage, job.first_mb, job.it, job.phase, chunk=layer))
                if off in timed:
                    first_bwd = next(a for a in job.actions if a.kind != "F")
                    deltas[gpu].append((timed[(gpu, first_bwd)][0], layers[layer].grad_bytes))
                    deltas[gpu].append((timed[off][1], -layers[layer].grad_bytes))


def _activations(plan: Plan, ctx: CostContext, timed: Timed, deltas: dict) -> None:
    layers = ctx.costs.layers
    keep_all = plan.recompute == "none"
    last_use: dict[tuple[int, int], float] = defaultdict(float)  # (mb, it) -> end of its last compute
    moved: dict[tuple[int, Action], float] = {}  # producer -> end of the transfer that moved its output
    for (gpu, a), (_s, e) in timed.items():
        if a.kind in ("ACT_OUT", "SEND"):
            producer = Action({"F": "F"}.get(a.phase or "", "B"), a.stage, a.mb, a.it)
            moved[(gpu, producer)] = max(moved.get((gpu, producer), 0.0), e)
    for (gpu, a), (s, e) in timed.items():
        if not a.is_compute:
            continue
        lo, hi = ctx.plan.partition.ranges(a.partition_phase)[a.stage]  # type: ignore[index]
        span = layers[lo:hi]
        last_use[(a.mb, a.it)] = max(last_use[(a.mb, a.it)], e)  # type: ignore[index]
        if a.kind == "F":
            if keep_all:
                b_end = _backward_end(timed, gpu, a)
                deltas[gpu] += [(s, sum(x.activation_bytes for x in span)), (b_end, -sum(x.activation_bytes for x in span))]
            else:
                work = max(x.activation_bytes for x in span)
                deltas[gpu] += [(s, work), (e, -work)]
                if not ctx.stateless:  # the stage input stays for the recompute
                    keep = boundary_bytes(ctx, lo)
                    deltas[gpu] += [(s, keep), (_backward_end(timed, gpu, a), -keep)]
            out = boundary_bytes(ctx, hi)
            deltas[gpu] += [(s, out), (moved.get((gpu, a), e), -out)]
        else:
            work = sum(x.activation_bytes for x in span) if (a.kind in ("B", "I", "FB") and not keep_all) else \
                max(x.activation_bytes for x in span)
            deltas[gpu] += [(s, work), (e, -work)]
            out = boundary_bytes(ctx, lo)
            deltas[gpu] += [(s, out), (moved.get((gpu, a), e), -out)]
    for (gpu, a), (s, e) in timed.items():
        if a.kind == "ACT_IN":
            consumer = Action(a.kind, a.stage, a.mb, a.it)  # placeholder replaced below
            consumer = _consumer(a)
            n = transfer_bytes(ctx, a)
            deltas[gpu] += [(s, n), (timed.get((gpu, consumer), (e, e))[1], -n)]
        elif a.kind == "ACT_OUT":
            n = transfer_bytes(ctx, a)
            deltas[CPU] += [(s, n), (last_use[(a.mb, a.it)], -n)]  # type: ignore[index]


def _consumer(a: Action) -> Action:
    if a.phase == "F":
        return Action("F", a.stage, a.mb, a.it)
    return Action("B", a.stage, a.mb, a.it)


def _backward_end(timed: Timed, gpu: int, f: Action) -> float:
    for kind in ("B", "I", "FB"):
        key = (gpu, Action(kind, f.stage, f.mb, f.it))
        if key in timed:
            return timed[key][1]
    return timed[(gpu, f)][1]
