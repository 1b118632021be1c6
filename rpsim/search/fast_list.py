"""The search's estimate for schedule families no analytic estimator models (split backward, V-shaped
placement, ...): build and lower the plan as make_plan does, time it with the list-scheduling timer
(rpsim.sim.list_timer: no link sharing, no SimPy) and derive memory by the simulator's own rules.
Slower than rpsim.search.fast_fixed (milliseconds to a second) but exact where links are not shared."""
from __future__ import annotations

from dataclasses import replace

from rpsim.ir import CPU, Partition, Plan
from rpsim.metrics.summary import iteration_window
from rpsim.partition.counts import partition_to_spec
from rpsim.planner import make_plan
from rpsim.scenario import Scenario
from rpsim.search.fast_bound import lower_bound
from rpsim.search.fast_context import FastContext
from rpsim.search.fast_eval import Estimate, finish
from rpsim.search.space import Candidate, plan_request
from rpsim.search.task_gc import plan_task
from rpsim.sim.action_costs import CostContext
from rpsim.sim.list_timer import Times, TransferTimes, list_timed_times
from rpsim.sim.memory import ALLOCATOR_OVERHEAD, memory_timeline
from rpsim.sim.simulate import cost_context
from rpsim.sim.trace import Trace
from rpsim.steady_run import until_steady


def estimate_by_list_timer(ctx: FastContext, sc: Scenario, c: Candidate, part: Partition,
                           transfers: TransferTimes | None = None) -> Estimate:
    """`transfers`: the transfer times memoised on build_topology(sc.server, sc.profile), shared by every
    candidate on that server (rpsim.search.workspace keeps one)."""
    with plan_task():  # a whole plan is built and timed (rpsim.search.task_gc)
        return _estimate(ctx, sc, c, part, transfers)


def _estimate(ctx: FastContext, sc: Scenario, c: Candidate, part: Partition, transfers: TransferTimes | None
              ) -> Estimate:
    iteration_s, peak_gpu, peak_host = list_timed(sc, c, part, transfers)
    # No steady state beats the bound (the window of a few iterations of an async plan can catch a
    # favourable phase): as the analytic RoundPipe estimate, and what lets search prune by the bound.
    bound_s = lower_bound(ctx, c.schedule, part, c.round_size, c.defer_w).iteration_s
    return finish(ctx, max(iteration_s, bound_s), peak_gpu, peak_host)


def list_timed(sc: Scenario, c: Candidate, part: Partition, transfers: TransferTimes | None = None
               ) -> tuple[float, float, float]:
    """The list timer's figures of the candidate's plan, unbounded: (iteration seconds over the steady
    window, peak GPU bytes with the allocator's overhead, peak host bytes)."""
    resolved = replace(c, partition=partition_to_spec(part))
    # As rpsim.steady_run: more iterations until the spans repeat (an estimate of one phase of an
    # alternating steady state ranks a plan up to 15% off).
    plan, (_, trace, times, costs) = until_steady(plan_request(resolved), lambda r: make_plan(sc, r),
                                                  lambda p: _timed(p, sc, transfers), lambda t: t[:2])
    mem = memory_timeline(plan, trace, costs, times)  # the times by action: no parsing them back
    peak_gpu = max(mem.peak_bytes(g) for g in range(plan.n_gpus)) * ALLOCATOR_OVERHEAD
    return iteration_window(plan, trace)[0], peak_gpu, mem.peak_bytes(CPU)


def _timed(plan: Plan, sc: Scenario, transfers: TransferTimes | None
           ) -> tuple[Plan, Trace, Times, CostContext]:
    costs = cost_context(plan, sc)
    trace, times = list_timed_times(plan, sc, costs, transfers)
    return plan, trace, times, costs
