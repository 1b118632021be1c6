"""A request's plan simulated until its iteration time is steady: the one path from a scenario and a
schedule request to a result (compare, simulate, plot, search's confirmations).

An async plan's default iterations (rpsim.planner.async_iterations) hold two periods to compare. Where
they differ (the host optimizer's queue still filling), the plan is rebuilt with twice the iterations and
simulated again, stopping once the iteration time has converged (rpsim.sim.steady), up to
MAX_ITERATIONS. A request that fixes its iterations (--iters) is simulated as asked.

A run that stops at steady state times a few iterations of a plan that may hold many more (20 for
RoundPipe on 64 GPUs, a dispatch period of 16): the first pass builds at most FIRST_BUILD_ITERS of them
(rpsim.planner.make_plan_prefix) and keeps that run when it provably is the whole plan's run
(`runs_as_whole_plan`), else builds the whole plan and simulates again. The figures are the whole
plan's either way; only the cost differs."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from rpsim.ir import CPU, Plan
from rpsim.metrics.summary import steady_state_reached
from rpsim.planner import PlanRequest, make_plan, make_plan_prefix
from rpsim.scenario import Scenario
from rpsim.schedules import traits_of
from rpsim.sim.simulate import SimResult, simulate
from rpsim.sim.trace import Trace

R = TypeVar("R")

MAX_ITERATIONS = 40  # e03's slowest ramp converges by iteration 5; beyond this the plan never settles
# An async plan's iteration i cannot start before the optimizer's steps of iteration i - 2 ran (staleness 1:
# its LOADs wait for STEP(i - 2), rpsim.ir.deps), and every action of i waits on those LOADs: every action
# of an iteration i >= 2 has a host-lane ancestor of iteration i - 2 or i - 1 (tests/test_plan_prefix.py).
LOOKAHEAD_ITERS = 2
# The first pass's plan: the earliest steady stop keeps 5 iterations (rpsim.sim.steady: two converged
# spans from iteration 2, then the drain), Llama-70B on 16-64 H100s keeps 6; with LOOKAHEAD_ITERS that
# are not reached, 9 leave one iteration to spare. A miss costs a second run, a spare iteration ~5% of one.
FIRST_BUILD_ITERS = 9


def simulate_request(sc: Scenario, req: PlanRequest) -> SimResult:
    """make_plan + simulate, with more iterations until the result is steady (module docstring)."""
    return steady_plan(sc, req)[1]


def steady_plan(sc: Scenario, req: PlanRequest) -> tuple[Plan, SimResult]:
    """The plan of the iterations its steady state needed (those simulated: the run stops once steady),
    and its simulation. `rpsim export` writes this plan, so that the file holds the actions of the trace
    `rpsim simulate --schedule` writes, and simulating it gives the figures that command reports.
    The first pass builds only the iterations the run needs (simulate_planned); a plan that had not
    settled is rebuilt whole with twice the iterations (a pass that stopped late would miss again)."""
    result = simulate_planned(sc, req, FIRST_BUILD_ITERS)
    planned = result.metrics["planned_iters"]
    while wants_more_iterations(req, planned, result.plan, result.trace):
        planned = min(2 * planned, MAX_ITERATIONS)
        result = simulate(make_plan(sc, replace(req, n_iters=planned)), sc)
    return result.plan, result


def plan_to_save(sc: Scenario, req: PlanRequest) -> Plan:
    """The plan a file should hold so that `rpsim simulate --plan` of it reports what simulating the request
    reported (`rpsim export`, `rpsim search --export`): an async plan with the iterations its steady state
    needed, any other as built. Built with its default iterations instead, an async plan whose steady state
    needed more reported another iteration time from the file (a search's best, 1.32 against 1.40 s)."""
    return steady_plan(sc, req)[0] if traits_of(req.schedule).optimizer == "async" else make_plan(sc, req)


def simulate_planned(sc: Scenario, req: PlanRequest, at_most_iters: int | None) -> SimResult:
    """simulate(make_plan(sc, req), sc): the same result, from a plan of at most `at_most_iters`
    iterations when that run is the whole plan's (runs_as_whole_plan), else from the whole plan."""
    plan, planned = make_plan_prefix(sc, req, at_most_iters)
    result = simulate(plan, sc, planned_iters=planned)
    if plan.n_iters < planned and not runs_as_whole_plan(result, plan.n_iters):
        result = simulate(make_plan(sc, req), sc)
    return result


def runs_as_whole_plan(result: SimResult, built_iters: int) -> bool:
    """Whether a run of a plan built for its first `built_iters` iterations (a prefix of the whole plan:
    rpsim.planner.make_plan_prefix) was, up to its stop, the run of the whole plan. It was if it stopped
    at steady state (the steady watch would have stopped the whole plan's run at the same iteration end:
    with more iterations it only allows more stops) before any action of the later iterations could
    start. Each of those waits, through a chain of ancestors, on a host-lane action (the optimizer's
    steps) of iteration built_iters - LOOKAHEAD_ITERS or later (LOOKAHEAD_ITERS); if none of these had
    finished, no later action had started, and until then both runs handled the same events in the
    same order. Plans without a host lane: on any action of those iterations."""
    if result.plan.n_iters >= built_iters:
        return False  # it ran to the end of what was built: the whole plan's run went on
    host = [it for (gpu, _lane), it in result.lane_progress.items() if gpu == CPU]
    latest = max(host or result.lane_progress.values(), default=-1)
    return latest < built_iters - LOOKAHEAD_ITERS


def wants_more_iterations(req: PlanRequest, planned: int, plan: Plan, trace: Trace) -> bool:
    """Whether until_steady goes on: the request leaves the iterations to the planner, the plan has
    fewer than MAX_ITERATIONS, and its timing is not steady."""
    return req.n_iters is None and planned < MAX_ITERATIONS and not steady_state_reached(plan, trace)


def until_steady(req: PlanRequest, build: Callable[[PlanRequest], Plan], time: Callable[[Plan], R],
                 timed: Callable[[R], tuple[Plan, Trace]]) -> tuple[Plan, R]:
    """build(req), then time(plan); while the timing `timed` gives is not steady and the request leaves
    the iterations to the planner, again with twice the iterations (up to MAX_ITERATIONS)."""
    plan = build(req)
    out = time(plan)
    while wants_more_iterations(req, plan.n_iters, *timed(out)):
        plan = build(replace(req, n_iters=min(2 * plan.n_iters, MAX_ITERATIONS)))
        out = time(plan)
    return plan, out
