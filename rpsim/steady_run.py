"""A request's plan simulated until its iteration time is steady: the one path from a scenario and a
schedule request to a result (compare, simulate, plot, search's confirmations).

An async plan's default iterations (rpsim.planner.async_iterations) hold two periods to compare. Where
they differ (the host optimizer's queue still filling), the plan is rebuilt with twice the iterations and
simulated again, stopping once the iteration time has converged (rpsim.sim.steady), up to
MAX_ITERATIONS. A request that fixes its iterations (--iters) is simulated as asked."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from rpsim.ir import Plan
from rpsim.metrics.summary import steady_state_reached
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import Scenario
from rpsim.sim.simulate import SimResult, simulate
from rpsim.sim.trace import Trace

R = TypeVar("R")

MAX_ITERATIONS = 40  # e03's slowest ramp converges by iteration 5; beyond this the plan never settles


def simulate_request(sc: Scenario, req: PlanRequest) -> SimResult:
    """make_plan + simulate, with more iterations until the result is steady (module docstring)."""
    return steady_plan(sc, req)[1]


def steady_plan(sc: Scenario, req: PlanRequest) -> tuple[Plan, SimResult]:
    """The plan of the iterations its steady state needed (those simulated: the run stops once steady),
    and its simulation. `rpsim export` writes this plan, so that the file holds the actions of the trace
    `rpsim simulate --schedule` writes, and simulating it gives the figures that command reports."""
    _, result = until_steady(req, lambda r: make_plan(sc, r), lambda plan: simulate(plan, sc),
                             lambda result: (result.plan, result.trace))
    return result.plan, result


def until_steady(req: PlanRequest, build: Callable[[PlanRequest], Plan], time: Callable[[Plan], R],
                 timed: Callable[[R], tuple[Plan, Trace]]) -> tuple[Plan, R]:
    """build(req), then time(plan); while the timing `timed` gives is not steady and the request leaves
    the iterations to the planner, again with twice the iterations (up to MAX_ITERATIONS)."""
    plan = build(req)
    out = time(plan)
    while req.n_iters is None and plan.n_iters < MAX_ITERATIONS and not steady_state_reached(*timed(out)):
        plan = build(replace(req, n_iters=min(2 * plan.n_iters, MAX_ITERATIONS)))
        out = time(plan)
    return plan, out
