"""Fast estimate for fixed-placement schedules (stage s on GPU s mod N: GPipe, 1F1B, interleaved, looped
BFS, and any future builder of that kind). The schedule's compute order is read once per (schedule, N, V,
M) from its own builder and list-scheduled at microbatch granularity with per-stage compute times, a
host-staged (or P2P) hop between GPUs, streamed weight loads and the optimizer step; no transfer lanes,
no link sharing. Memory follows rpsim.sim.memory's rules and rpsim.passes.residency's policy."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from rpsim.ir import Partition
from rpsim.ir.dataflow import saved_boundaries
from rpsim.passes.residency import peak_in_flight
from rpsim.schedules import get_schedule
from rpsim.schedules.base import BuildOptions
from rpsim.search.fast_context import FastContext
from rpsim.sim.hop import copy_between_gpus_s
from rpsim.sim.memory import ALLOCATOR_OVERHEAD

_NO_PARTITION = Partition.same(((0, 1),))  # saved_boundaries reads the partition only for stateless GPUs
Op = tuple[int, int, int, int, int, bool]  # (done index, dependency index or -1, hop index, duration index,
#                                          stage, last op of its stage on this GPU)


@dataclass(frozen=True)
class Order:
    ops: tuple[tuple[Op, ...], ...]  # per GPU, one iteration in lane order
    in_flight: tuple[int, ...]  # per stage: most microbatches between its F and its B
    stages: tuple[tuple[int, ...], ...]  # per GPU, its stages in the order it first runs them
    phased: bool  # every GPU runs all its forwards before any backward (GPipe, looped BFS)


@lru_cache(maxsize=512)
def compute_order(schedule: str, n_gpus: int, v: int, n_mb: int) -> Order:
    """The builder's own compute order, encoded for list scheduling: F(s, mb) waits for F(s-1, mb) after
    the hop between stages s-1 and s, B(s, mb) for B(s+1, mb) (the last stage's for its own F)."""
    p, m = n_gpus * v, n_mb
    dummy = Partition.same(tuple((i, i + 1) for i in range(p)))  # the order ignores layer ranges
    plan = get_schedule(schedule).build(n_gpus, dummy, n_mb, BuildOptions(virtual_stages=v))
    in_flight = [0] * p
    per_gpu, phased = [], True
    for g in range(n_gpus):
        for (stage, _it), k in peak_in_flight(plan, g).items():
            in_flight[stage] = max(in_flight[stage], k)
        acts = [a for a in plan.lane(g, "compute") if a.is_compute]
        kinds = [a.kind for a in acts]
        phased &= "B" not in kinds or "F" not in kinds[kinds.index("B"):]
        last_of = {a.stage: i for i, a in enumerate(acts)}
        ops = []
        for i, a in enumerate(acts):
            s, mb = a.stage, a.mb
            assert s is not None and mb is not None and a.kind in ("F", "B"), a
            if a.kind == "F":
                ops.append((s * m + mb, (s - 1) * m + mb if s else -1, max(s - 1, 0), s, s, last_of[s] == i))
            else:
                dep = p * m + (s + 1) * m + mb if s < p - 1 else s * m + mb
                ops.append((p * m + s * m + mb, dep, s, p + s, s, last_of[s] == i))
        per_gpu.append(tuple(ops))
    stages = tuple(tuple(dict.fromkeys(op[4] for op in ops)) for ops in per_gpu)
    return Order(tuple(per_gpu), tuple(in_flight), stages, phased)


@dataclass(frozen=True)
class FixedEstimate:
    iteration_s: float
    peak_gpu_bytes: float
    peak_host_bytes: float
    resident: bool
    h2d_bytes: float  # mean per GPU per iteration
    d2h_bytes: float


def list_schedule(order: Order, durations: list[float], hop: list[float], load_ready: list[float],
                  step_s: list[float]) -> tuple[float, list[float]]:
    """Compute end of one flushed iteration and each stage's last-backward end. Every GPU runs its ops
    in order, each when its GPU is free and its input has arrived; a GPU optimizer step follows a
    stage's last op when weights are resident (Megatron's layout)."""
    n, p = len(order.ops), len(order.in_flight)
    left = sum(len(o) for o in order.ops)
    done = [-1.0] * left  # by op index: 2 * stages * microbatches ops, each ran once
    stage_end = [0.0] * p
    ptr, free = [0] * n, [0.0] * n
    while left:
        moved = 0
        for g in range(n):
            ops, i, t = order.ops[g], ptr[g], free[g]
            while i < len(ops):
                idx, dep, hk, dk, st, last = ops[i]
                # Comparisons, not max(): a call costs ~8x more, and this loop runs 2 * stages * microbatches
                # times per estimate.
                if dep >= 0:
                    d = done[dep]
                    if d < 0:
                        break
                    if d + hop[hk] > t:  # noqa: PLR1730
                        t = d + hop[hk]
                if load_ready[st] > t:  # noqa: PLR1730
                    t = load_ready[st]
                t += durations[dk]
                done[idx] = t
                if last:
                    stage_end[st] = t
                    t += step_s[st]
                i += 1
            moved += i - ptr[g]
            left -= i - ptr[g]
            ptr[g], free[g] = i, t
        assert moved, "fixed-placement order deadlocks"  # builders' orders are checked deadlock-free
    return max(free), stage_end


def estimate_fixed(ctx: FastContext, schedule: str, part: Partition, v: int) -> FixedEstimate:
    n, m, ranges = ctx.n_gpus, ctx.n_mb, part.fwd
    order = compute_order(schedule, n, v, m)
    rc = ctx.recompute != "none"
    fw = [ctx.f(a, b) for a, b in ranges]
    bw = [ctx.b(a, b) + (ctx.r(a, b) if rc else 0.0) for a, b in ranges]
    p = len(ranges)
    # hop[s]: from stage s to s + 1 (another GPU unless N = 1); the last entry is the same-GPU F -> B.
    hop = [_hop_s(ctx, ctx.boundary(b)) if n > 1 else 0.0 for _a, b in ranges[:-1]] + [0.0]
    mem = _memory(ctx, ranges, order)
    host_staged = ctx.links.p2p_bytes_per_s is None and n > 1
    crossing = sum(ctx.boundary(b) for _a, b in ranges[:-1]) * m * 2 / n if host_staged else 0.0
    if mem.fits_resident:
        steps = [ctx.params(a, b) * ctx.gpu_step_s_per_param for a, b in ranges]
        iteration, _ = list_schedule(order, fw + bw, hop, [0.0] * p, steps)
        return FixedEstimate(iteration, mem.resident_gpu, mem.host_act, True, crossing / 2, crossing / 2)
    end, stage_end = list_schedule(order, fw + bw, hop, _load_ready(ctx, ranges, n, order), [0.0] * p)
    iteration = max(end, _cpu_end(ctx, ranges, stage_end, order))
    states = ctx.weight(0, ctx.n_layers) + ctx.grad(0, ctx.n_layers) + ctx.optim(0, ctx.n_layers)
    h2d = ctx.weight(0, ctx.n_layers) / n + crossing / 2
    d2h = ctx.grad(0, ctx.n_layers) / n + crossing / 2
    return FixedEstimate(iteration, mem.streamed_gpu, mem.host_act + states, False, h2d, d2h)


def _hop_s(ctx: FastContext, n_bytes: float) -> float:
    links = ctx.links
    return copy_between_gpus_s(n_bytes, links.p2p_bytes_per_s, links.link_d2h_bytes_per_s,
                               links.link_h2d_bytes_per_s, links.latency_s)


def _load_ready(ctx: FastContext, ranges: tuple, n: int, order: Order) -> list[float]:
    """Streamed weights: each GPU loads its stages once per iteration, one after another in the order
    it first runs them, all GPUs at once over the host's shared links."""
    ready = [0.0] * len(ranges)
    rate = ctx.links.first_load_bytes_per_s
    for g in range(n):
        t = 0.0
        for stage in order.stages[g]:
            t += ctx.weight(*ranges[stage]) / rate
            ready[stage] = t
    return ready


def _cpu_end(ctx: FastContext, ranges: tuple, stage_end: list[float], order: Order) -> float:
    """CPU Adam, deepest layer first, each stage after its gradient download. A GPU downloads its stages'
    gradients in the order it first ran them (rpsim.passes.weights), so with several stages per GPU the
    deeper ones, done first, wait behind the shallowest."""
    ready = [0.0] * len(ranges)
    for stages in order.stages:
        t = 0.0
        for stage in stages:
            t = max(t, stage_end[stage]) + ctx.grad(*ranges[stage]) / ctx.links.link_d2h_bytes_per_s
            ready[stage] = t
    t = 0.0
    for s in range(len(ranges) - 1, -1, -1):
        t = max(t, ready[s]) + ctx.cpu.step_s(ctx.params(*ranges[s]), 1)  # one download per stage
    return t


@dataclass(frozen=True)
class _Memory:
    fits_resident: bool
    resident_gpu: float
    streamed_gpu: float
    host_act: float


def _memory(ctx: FastContext, ranges: tuple, order: Order) -> _Memory:
    """Peak bytes per GPU by rpsim.sim.memory's rules (the stage input kept for recompute, or every
    activation without it; a whole stage's activations while its backward recomputes), and
    rpsim.passes.residency's rule for keeping weights, gradients and Adam state on the GPU."""
    keep_all = ctx.recompute == "none"
    fits, resident_peak, streamed_peak = True, 0.0, 0.0
    for stages in order.stages:
        b = [_bytes(ctx, ranges[s], order.in_flight[s], keep_all) for s in stages]
        need = sum(x.states + x.saved for x in b) + max(x.full for x in b)
        fits &= need * ALLOCATOR_OVERHEAD <= ctx.gpu_memory_bytes
        transient = max(x.transient for x in b)
        kept = sum(x.kept for x in b)
        resident_peak = max(resident_peak, sum(x.states for x in b) + kept + transient)
        if order.phased:
            # Backward visits the stages in reverse: a finished stage frees its weights and its kept
            # activations; its gradients wait for the first-run stage's download (downloads keep job order).
            streamed = sum(x.weights for x in b) + kept + transient
            for j in range(len(b) - 1, -1, -1):
                streamed = max(streamed, sum(x.weights + x.kept for x in b[:j + 1])
                               + sum(x.grads for x in b[j:]) + b[j].transient)
        else:
            streamed = sum(x.weights + x.grads for x in b) + kept + transient
        streamed_peak = max(streamed_peak, streamed)
    host_act = 0.0
    if ctx.links.p2p_bytes_per_s is None and len(order.stages) > 1:
        per_mb = sum(ctx.boundary(b) for _a, b in ranges[:-1]) + sum(ctx.boundary(a) for a, _b in ranges[1:])
        host_act = per_mb * max(order.in_flight)
    return _Memory(fits, resident_peak * ALLOCATOR_OVERHEAD, streamed_peak * ALLOCATOR_OVERHEAD, host_act)


@dataclass(frozen=True)
class _StageBytes:
    states: float  # weights, gradients and Adam state (resident)
    weights: float
    grads: float
    saved: float  # residency's count of saved activations at peak in-flight
    full: float  # every activation of one microbatch
    kept: float  # rpsim.sim.memory's: what stays from F to B, at peak in-flight
    transient: float  # working set while computing one microbatch, with its boundary buffers


def _bytes(ctx: FastContext, r: tuple[int, int], in_flight: int, keep_all: bool) -> _StageBytes:
    a, b = r
    full = ctx.act(a, b)
    # Stages live on their GPUs: the stage input plus rpsim.ir.dataflow's saved boundaries inside it
    # (the partition only matters on stateless GPUs, so none is passed).
    inside = saved_boundaries(_NO_PARTITION, ctx.recompute, False, a, b)
    saved = full if keep_all else ctx.inp[a] + sum(ctx.inp[x] for x in inside)
    work = ctx.max_act(a, b) if keep_all else ctx.backward_work(a, b, ctx.recompute == "layer")
    return _StageBytes(ctx.weight(a, b) + ctx.grad(a, b) + ctx.optim(a, b), ctx.weight(a, b), ctx.grad(a, b),
                       saved * in_flight, full, (full if keep_all else ctx.boundary(a)) * in_flight,
                       work + 2 * ctx.boundary(b) + 2 * ctx.boundary(a))
