"""One result per (plan, trace): throughput, MFU, bubbles, memory, links, feasibility. The JSON keys of
`rpsim compare --format json` are RESULT_KEYS (architecture.md, "Formats")."""
from __future__ import annotations

import math
from statistics import mean
from typing import Any

from rpsim.ir import CPU, Plan
from rpsim.metrics.bubbles import bubble_breakdown, events_by_gpu
from rpsim.metrics.intervals import clip, length, merge, overlap
from rpsim.sim.trace import Trace

RESULT_KEYS = ("schedule", "feasible", "reason", "iteration_s", "tokens_per_s", "mfu", "bubble", "bubble_fill",
               "bubble_drain", "bubble_switch", "bubble_intra", "peak_gpu_mem_bytes", "peak_host_mem_bytes",
               "n_mb", "mb_size")
TRANSFER_LANES = ("h2d", "d2h", "param_h2d", "grad_d2h", "p2p")


def iteration_window(plan: Plan, trace: Trace, planned_iters: int | None = None,
                     ) -> tuple[float, float, float, bool]:
    """(iteration_s, window start, window end, steady). Async plans: mean spacing of the iteration ends
    after the first two (whose loads wait for no optimizer step yet), at least the host optimizer's work
    per iteration; flushed plans: the makespan. `planned_iters` > plan.n_iters: the run stopped at steady
    state (rpsim.sim.steady), and the spans of the iterations it did not simulate repeat its last one, so
    the mean is the one a run of all planned iterations gives (within the convergence tolerance)."""
    if plan.optimizer == "async" and plan.n_iters >= 3:
        last: dict[int, float] = {}
        for e in trace.events:
            if e.lane == "compute" and e.end_s > last.get(e.it, -math.inf):
                last[e.it] = e.end_s
        ends = [last[i] for i in range(plan.n_iters)]
        # Spans from iteration 2 on only: with staleness 1, iteration 1 waits for no optimizer step, so
        # ends[1] - ends[0] is compute alone; averaging it in (as n_iters == 3 used to) halved an
        # optimizer-bound iteration time.
        # The last iteration drains (no later iteration fills its bubbles): with 4+ iterations it is left
        # out of both the spans and the bubble window.
        last = plan.n_iters - 1 if plan.n_iters >= 4 else plan.n_iters
        spans = [ends[i] - ends[i - 1] for i in range(2, last)]
        if planned_iters is not None and planned_iters > plan.n_iters and spans:
            spans += [spans[-1]] * (planned_iters - plan.n_iters)
        # The host optimizer steps every layer once per iteration, one step at a time, so no steady state is
        # faster than its work per iteration; a few simulated iterations can still sit just below it. (GPU
        # lanes give no such bound: RoundPipe rotates slots, so a GPU's share varies by iteration.)
        bound = max(host_work_per_iteration_s(trace, plan.n_iters), gpu_work_per_iteration_s(trace, plan))
        return max(mean(spans), bound), ends[1], ends[last - 1], True
    makespan = trace.makespan_s
    return makespan / plan.n_iters, 0.0, makespan, False


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


def exposed_comm_s(trace: Trace, n_gpus: int, lo: float, hi: float) -> float:
    """Time a GPU's compute lane sits idle while one of its transfer lanes is busy, summed over GPUs."""
    total = 0.0
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
    b = bubble_breakdown(trace, plan.n_gpus, lo, hi, steady)
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
        "exposed_comm_s": exposed_comm_s(trace, n, lo, hi), "link_utilization": link_util or {},
        "n_mb": plan.n_mb, "mb_size": sc.training.mb_size, "n_iters": plan.n_iters, "planned_iters": planned_iters or plan.n_iters,
        "steady_state": steady,
        "window_s": [lo, hi], "level": plan.level, "weights": plan.options.get("weights", "n/a"),
        "partition": plan.partition.to_json(), "virtual_stages": plan.options.get("virtual_stages", 1),
    }
