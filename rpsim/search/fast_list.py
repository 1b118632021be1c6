"""The search's estimate for schedule families no analytic estimator models (split backward, V-shaped
placement, ...): build and lower the plan as make_plan does, time it with the list-scheduling timer
(rpsim.sim.list_timer: no link sharing, no SimPy) and derive memory by the simulator's own rules.
Slower than rpsim.search.fast_fixed (milliseconds to a second) but exact where links are not shared."""
from __future__ import annotations

from dataclasses import replace

from rpsim.gc_pause import gc_paused
from rpsim.ir import CPU, Partition
from rpsim.metrics.summary import iteration_window
from rpsim.partition.counts import partition_to_spec
from rpsim.planner import make_plan
from rpsim.scenario import Scenario
from rpsim.search.fast_context import FastContext
from rpsim.search.fast_eval import Estimate, finish
from rpsim.search.space import Candidate, plan_request
from rpsim.sim.list_timer import list_timed
from rpsim.sim.memory import ALLOCATOR_OVERHEAD, memory_timeline
from rpsim.sim.simulate import cost_context
from rpsim.steady_run import until_steady


def estimate_by_list_timer(ctx: FastContext, sc: Scenario, c: Candidate, part: Partition) -> Estimate:
    with gc_paused(collect=True):  # a whole plan is built and timed (rpsim.gc_pause)
        return _estimate(ctx, sc, c, part)


def _estimate(ctx: FastContext, sc: Scenario, c: Candidate, part: Partition) -> Estimate:
    resolved = replace(c, partition=partition_to_spec(part))
    # As rpsim.steady_run: more iterations until the spans repeat (an estimate of one phase of an
    # alternating steady state ranks a plan up to 15% off).
    plan, (_, trace) = until_steady(plan_request(resolved), lambda r: make_plan(sc, r),
                                    lambda p: (p, list_timed(p, sc)), lambda timed: timed)
    mem = memory_timeline(plan, trace, cost_context(plan, sc))
    iteration_s = iteration_window(plan, trace)[0]
    peak_gpu = max(mem.peak_bytes(g) for g in range(plan.n_gpus)) * ALLOCATOR_OVERHEAD
    return finish(ctx, iteration_s, peak_gpu, mem.peak_bytes(CPU))
