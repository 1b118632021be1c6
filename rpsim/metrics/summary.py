"""One result per (plan, trace): throughput, MFU, bubbles, memory, links, feasibility. The JSON keys of
`rpsim compare --format json` are RESULT_KEYS (architecture.md, "Formats")."""
from __future__ import annotations

import math
from statistics import mean
from typing import Any

from rpsim.ir import CPU, Plan
from rpsim.metrics.bubbles import bubble_breakdown, events_by_gpu
from rpsim.metrics.intervals import clip, length, merge, overlap
from rpsim.schedules import SCHEDULES
from rpsim.sim.steady import FIRST_SPAN
from rpsim.sim.trace import Trace, TraceEvent

RESULT_KEYS = ("schedule", "feasible", "reason", "iteration_s", "tokens_per_s", "mfu", "bubble", "bubble_fill",
               "bubble_drain", "bubble_switch", "bubble_intra", "peak_gpu_mem_bytes", "peak_host_mem_bytes",
               "n_mb", "mb_size")
# Spans that repeat within this are steady (steady_cycle; issue 14: e03's runs ramp by 25% from iteration
# 2 to 3; a few tenths of a percent is the creep of a nearly settled queue).
STEADY_REL_TOL = 0.005
MAX_CYCLE_PERIODS = 4  # steady_cycle looks for cycles of up to this many dispatch periods
TRANSFER_LANES = ("h2d", "d2h", "param_h2d", "grad_d2h", "p2p")


def iteration_window(plan: Plan, trace: Trace, planned_iters: int | None = None,
                     ) -> tuple[float, float, float, bool]:
    """(iteration_s, window start, window end, steady). Async plans: the mean span between iteration ends
    over the last repeating cycle before the drain (steady_tail), at least the host optimizer's work
    per iteration; flushed plans: the makespan. `planned_iters`: the plan's iterations when the run
    stopped at steady state (rpsim.sim.steady); the spans it simulated end in the converged ones."""
    if plan.optimizer == "async" and plan.n_iters >= 3:
        ends, last = _async_iteration_ends(plan, trace)
        tail = steady_tail(steady_spans(ends, last), steady_period(plan))
        # The host optimizer steps every layer once per iteration, one step at a time, so no steady state is
        # faster than its work per iteration; a few simulated iterations can still sit just below it. (GPU
        # lanes give no such bound: RoundPipe rotates slots, so a GPU's share varies by iteration.)
        bound = max(host_work_per_iteration_s(trace, plan.n_iters), gpu_work_per_iteration_s(trace, plan))
        return max(mean(tail), bound), ends[last - 1 - len(tail)], ends[last - 1], True
    makespan = trace.makespan_s
    return makespan / plan.n_iters, 0.0, makespan, False


def _async_iteration_ends(plan: Plan, trace: Trace) -> tuple[list[float], int]:
    """Each iteration's last compute end, and the index of the drain iteration (left out of the spans:
    no later iteration fills its bubbles) -- or n_iters when a 3-iteration plan has none to spare."""
    last_end: dict[int, float] = {}
    for e in trace.events:
        if e.lane == "compute" and e.end_s > last_end.get(e.it, -math.inf):
            last_end[e.it] = e.end_s
    return [last_end[i] for i in range(plan.n_iters)], plan.n_iters - 1 if plan.n_iters >= 4 else plan.n_iters


def steady_spans(ends: list[float], last: int) -> list[float]:
    """Spans between iteration ends from iteration FIRST_SPAN to the one before the drain. Spans start at
    2: with staleness 1 iteration 1 waits for no optimizer step, so ends[1] - ends[0] is compute alone
    (averaging it in halved an optimizer-bound iteration time)."""
    return [ends[i] - ends[i - 1] for i in range(FIRST_SPAN, last)]


def steady_period(plan: Plan) -> int:
    """Iterations one steady mean spans: the dispatch's period (rpsim.schedules.roundpipe.dispatch_period)
    where iterations load GPUs differently, else 1. A plan of an unknown schedule (a loaded or torch-CSV
    plan) has 1."""
    module = SCHEDULES.get(plan.schedule)
    period_of = module.TRAITS.plan_steady_period if module is not None else None
    return period_of(plan) if period_of else 1


def steady_cycle(spans: list[float], period: int, rel_tol: float = STEADY_REL_TOL) -> int | None:
    """The shortest p whose last p spans repeat the p before them within rel_tol: the steady state's
    cycle, or None when none of up to MAX_CYCLE_PERIODS dispatch periods repeats yet. The dispatch period
    (how iterations rotate jobs over GPUs) is not the only one: with the optimizer's staleness a plan
    can settle into alternating iterations (Qwen3-1.7B RoundPipe on 8 x 4090, 8 microbatches: 1.318 s and
    1.791 s), and a mean over one span then misses the mean by 15%."""
    for p in range(1, MAX_CYCLE_PERIODS * period + 1):
        if len(spans) < 2 * p:
            return None
        if all(abs(spans[-1 - k] - spans[-1 - k - p]) <= rel_tol * spans[-1 - k] for k in range(p)):
            return p
    return None


def steady_tail(spans: list[float], period: int) -> list[float]:
    """The spans a steady iteration time averages: the last repeating cycle (steady_cycle), or the last
    dispatch period while none repeats yet."""
    return spans[-(steady_cycle(spans, period) or period):]


def steady_state_reached(plan: Plan, trace: Trace, rel_tol: float = STEADY_REL_TOL) -> bool:
    """Whether an async plan's spans before the drain end in a repeating cycle (steady_cycle): the
    iteration time iteration_window reports is then the steady one. Where the host optimizer is the
    bottleneck its queue can take several iterations to fill (rpsim.planner.async_iterations), and a
    short plan's last span is still rising. Flushed plans: always."""
    if plan.optimizer != "async" or plan.n_iters < 3:
        return True
    ends, last = _async_iteration_ends(plan, trace)
    return steady_cycle(steady_spans(ends, last), steady_period(plan), rel_tol) is not None


def gpu_work_per_iteration_s(trace: Trace, plan: Plan) -> float:
    """All GPUs' compute time per iteration over the GPU count: no iteration can finish faster than
    perfectly balanced work allows (a few simulated iterations can catch a favourable phase)."""
    busy = sum(e.end_s - e.start_s for e in trace.events if e.lane == "compute" and e.gpu != CPU)
    return busy / plan.n_iters / plan.n_gpus


def host_work_per_iteration_s(trace: Trace, n_iters: int) -> float:
    """The host optimizer lane's busy time per iteration: the same work each iteration, one step at a time."""
    return sum(e.end_s - e.start_s for e in trace.events if e.gpu == CPU) / n_iters


def model_flops(plan: Plan, costs: Any) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs incl. recompute) per iteration (PaLM App. B convention for MFU)."""
    per_mb = sum(x.forward_flops + x.backward_flops for x in costs.layers)
    recompute = 0.0
    if plan.recompute != "none":
        fused = plan.partition.bwd[-1] if plan.partition.fused else None
        recompute = sum(x.recompute_flops for i, x in enumerate(costs.layers)
                        if not (fused and fused[0] <= i < fused[1]))
    return per_mb * plan.n_mb, (per_mb + recompute) * plan.n_mb


def exposed_comm_s(trace: Trace, n_gpus: int, lo: float, hi: float,
                   computing: list[list[TraceEvent]] | None = None) -> float:
    """Time a GPU's compute lane sits idle while one of its transfer lanes is busy, summed over GPUs.
    `computing`: events_by_gpu(trace, n_gpus, ("compute",)), when the caller has it."""
    total = 0.0
    if computing is None:
        computing = events_by_gpu(trace, n_gpus, ("compute",))
    transferring = events_by_gpu(trace, n_gpus, TRANSFER_LANES)
    for gpu in range(n_gpus):
        compute = merge(clip([(e.start_s, e.end_s) for e in computing[gpu]], lo, hi))
        moving = merge(clip([(e.start_s, e.end_s) for e in transferring[gpu]], lo, hi))
        total += length(moving) - overlap(compute, moving)
    return total


def summarize(plan: Plan, trace: Trace, sc: Any, peak_gpu: list[float], peak_host: float,
              link_util: dict[str, float] | None = None, planned_iters: int | None = None) -> dict[str, Any]:
    """`planned_iters`: the plan's iterations when `plan` holds only those a steady-state stop simulated."""
    iteration_s, lo, hi, steady = iteration_window(plan, trace, planned_iters)
    computing = events_by_gpu(trace, plan.n_gpus, ("compute",))  # (one pass for both uses below)
    b = bubble_breakdown(trace, plan.n_gpus, lo, hi, steady, computing)
    mflops, hflops = model_flops(plan, sc.costs)
    peak = sc.server.gpu.peak_flops_per_s(sc.training.precision)
    n = plan.n_gpus
    gpu_cap = sc.server.gpu.memory_bytes
    over = [(g, p) for g, p in enumerate(peak_gpu) if p > gpu_cap]
    reason = ""
    if over:
        g, p = max(over, key=lambda x: x[1])
        reason = f"GPU {g} needs {p / 2**30:.1f} GiB, has {gpu_cap / 2**30:.1f} GiB"
    elif peak_host > sc.server.host.dram_bytes:
        reason = f"host needs {peak_host / 2**30:.0f} GiB, has {sc.server.host.dram_bytes / 2**30:.0f} GiB"
    return {
        "schedule": plan.schedule, "feasible": not reason, "reason": reason, "iteration_s": iteration_s,
        "tokens_per_s": sc.training.tokens_per_iteration / iteration_s if iteration_s else 0.0,
        "mfu": mflops / (iteration_s * n * peak) if iteration_s else 0.0,
        "hfu": hflops / (iteration_s * n * peak) if iteration_s else 0.0,
        "model_tflops_per_gpu": mflops / iteration_s / n / 1e12 if iteration_s else 0.0,
        "bubble": b.bubble, "bubble_fill": b.fill, "bubble_drain": b.drain, "bubble_switch": b.switch,
        "bubble_intra": b.intra, "bubble_megatron": b.megatron, "busy_s": list(b.busy_s),
        "peak_gpu_mem_bytes": peak_gpu, "peak_host_mem_bytes": peak_host,
        "exposed_comm_s": exposed_comm_s(trace, n, lo, hi, computing), "link_utilization": link_util or {},
        "n_mb": plan.n_mb, "mb_size": sc.training.mb_size, "n_iters": plan.n_iters, "planned_iters": planned_iters or plan.n_iters,
        "steady_state": steady,
        "window_s": [lo, hi], "level": plan.level, "weights": plan.options.get("weights", "n/a"),
        "partition": plan.partition.to_json(), "virtual_stages": plan.options.get("virtual_stages", 1),
    }
