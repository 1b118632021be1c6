"""`simulate(plan, scenario)`: the timed trace of a lowered plan, its memory timeline and its metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
from rpsim.costs.optimizer_threads import plan_step_threads
from rpsim.gc_pause import gc_paused
from rpsim.ir import CPU, LaneId, Plan
from rpsim.ir.deps import dependency_facts
from rpsim.metrics import summarize
from rpsim.scenario import Scenario
from rpsim.sim.action_costs import CostContext, gpu_step_s_per_param
from rpsim.sim.engine import EngineInputs, run_engine
from rpsim.sim.hop import hop_delay
from rpsim.sim.memory import ALLOCATOR_OVERHEAD, MemoryTimeline, memory_timeline
from rpsim.sim.steady import first_iterations
from rpsim.sim.topology import build_topology
from rpsim.sim.trace import Trace


@dataclass(frozen=True)
class SimResult:
    plan: Plan
    trace: Trace
    memory: MemoryTimeline
    metrics: dict[str, Any]
    lane_progress: dict[LaneId, int] = field(default_factory=dict)  # rpsim.sim.engine.EngineRun's


def cost_context(plan: Plan, sc: Scenario) -> CostContext:
    rates = cpu_optimizer_rates(sc.server.host, sc.profile, sc.server.host_dram_bytes_per_s,
                                plan_step_threads(plan, sc.server.host.cores))
    return CostContext.of(plan, sc.costs, rates, gpu_step_s_per_param(sc.server.gpu),
                          sc.server.host.issue_s if plan.level == "pcie" else None)


def simulate(plan: Plan, sc: Scenario, stop_at_steady: bool = True, planned_iters: int | None = None) -> SimResult:
    """`stop_at_steady`: an async plan's run stops once its iteration time converged (rpsim.sim.steady);
    the result's plan then holds the iterations simulated, and metrics say how many of how many.
    `planned_iters`: the iterations of the request's whole plan when `plan` holds its first ones only
    (rpsim.steady_run builds those a run needs; metrics report the whole plan's count as planned).
    The cyclic garbage collector is paused meanwhile (rpsim.gc_pause: a run allocates ~10^5-10^6
    long-lived acyclic objects, which every full collection rescanned; no figure depends on it), as
    `rpsim` commands pause it for their whole run: library callers (experiments, benchmarks) get the same."""
    with gc_paused():
        return _simulate(plan, sc, stop_at_steady, planned_iters or plan.n_iters)


def _simulate(plan: Plan, sc: Scenario, stop_at_steady: bool, planned_iters: int) -> SimResult:
    graph = dependency_facts(plan)
    ctx = cost_context(plan, sc)
    topo = build_topology(sc.server, sc.profile, plan_step_threads(plan, sc.server.host.cores)) \
        if plan.level == "pcie" else None
    hop_s = hop_delay(plan.level, sc).seconds
    run = run_engine(EngineInputs(plan, graph, ctx, topo, hop_s, stop_at_steady))
    plan = first_iterations(plan, run.simulated_iters)
    net = run.network
    trace = Trace(run.trace.events, {"source": "rpsim", "schedule": plan.schedule, "level": plan.level,
                                     "model": sc.model.name, "server": sc.server.name, "n_gpus": plan.n_gpus})
    mem = memory_timeline(plan, trace, ctx, run.timed)
    allocated = [mem.peak_bytes(g) for g in range(plan.n_gpus)]
    peak_gpu = [b * ALLOCATOR_OVERHEAD for b in allocated]
    util: dict[str, float] = {}
    makespan_s = trace.makespan_s  # once: it scans every event
    if net is not None and makespan_s > 0:
        net.sync_metrics()
        through = net.bytes_through  # computed on each read
        util = {r: through[r] / (cap * makespan_s) for r, cap in net.capacity_bytes_per_s.items() if through[r] > 0}
    metrics = summarize(plan, trace, sc, peak_gpu, mem.peak_bytes(CPU), util, planned_iters)
    # The live tensor bytes alone: what torch.cuda.max_memory_allocated reports for the same run, and what
    # rpexec's measured traces hold as their peak_gpu_mem_bytes.
    metrics["peak_gpu_allocated_bytes"] = allocated
    return SimResult(plan, trace, mem, metrics, run.lane_progress)
