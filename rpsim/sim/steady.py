"""Steady state detected rather than enumerated: `SteadyWatch` follows the iteration ends of an async plan
while the engine runs and fires once the iteration time has converged, and `first_iterations` cuts the
plan to the iterations simulated. Must not import the engine (the engine drives this).

Convergence: CONVERGED_SPANS consecutive spacings of iteration ends, from iteration 2 on, within
REL_TOL of each other (metrics.summary then averages them). The run continues until every action of the next
iteration has finished, which the metrics leave out as the drain, and stops there.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

import simpy

from rpsim.ir import Action, Plan

REL_TOL = 1e-3  # 0.1%: iteration_s moves by less than this (issue 18)
FIRST_SPAN = 2  # iteration 1 waits for no optimizer step (staleness 1): spans count from iteration 2
CONVERGED_SPANS = 2  # consecutive spans within REL_TOL: converged (the metrics then average these)


class SteadyWatch:
    """Counts finished actions per iteration; `event` succeeds once the run can stop: converged and the
    iteration after the converged ones complete, or everything done."""

    def __init__(self, env: simpy.Environment, plan: Plan) -> None:
        self.event = env.event()
        self.n_iters = plan.n_iters
        self._left_compute = Counter(a.it for (_gpu, lane), actions in plan.lanes.items() if lane == "compute"
                                     for a in actions)
        self._left = Counter(a.it for actions in plan.lanes.values() for a in actions)
        self._n_left = sum(self._left.values())
        self._ends_s: dict[int, float] = {}
        self.last_it: int | None = None  # once converged: the last iteration kept (the drain)
        self._left_kept = 0  # unfinished actions of iterations <= last_it

    def finished(self, a: Action, lane: str, now_s: float) -> None:
        it = a.it
        self._n_left -= 1
        self._left[it] -= 1
        if self.last_it is not None and it <= self.last_it:
            self._left_kept -= 1
        if lane == "compute":
            self._left_compute[it] -= 1
            if not self._left_compute[it]:
                self._ends_s[it] = now_s
                if self.last_it is None:
                    self._check(it)
        stop = self._n_left == 0 or (self.last_it is not None and self._left_kept == 0)
        if stop and not self.event.triggered:
            self.event.succeed()

    def _check(self, it: int) -> None:
        ends = self._ends_s
        first = it - CONVERGED_SPANS  # the iteration end the first compared span starts from
        if first < FIRST_SPAN - 1 or it + 2 >= self.n_iters or any(i not in ends for i in range(first, it + 1)):
            return  # too early to tell, or stopping would save nothing
        spans = [ends[i] - ends[i - 1] for i in range(it - CONVERGED_SPANS + 1, it + 1)]
        if all(abs(b - a) <= REL_TOL * a for a, b in itertools.pairwise(spans)):
            self.last_it = it + 1
            self._left_kept = sum(self._left[i] for i in range(self.last_it + 1))

    @property
    def simulated_iters(self) -> int:
        return self.n_iters if self.last_it is None else self.last_it + 1


def first_iterations(plan: Plan, n_iters: int) -> Plan:
    """The plan's actions of iterations 0 .. n_iters-1 only (what a run stopped at steady state timed)."""
    if n_iters >= plan.n_iters:
        return plan
    lanes = {lane: tuple(a for a in actions if a.it < n_iters) for lane, actions in plan.lanes.items()}
    edges = tuple((tail, head) for tail, head in plan.extra_edges if tail[1].it < n_iters and head[1].it < n_iters)
    return replace(plan.with_lanes({k: v for k, v in lanes.items() if v}), n_iters=n_iters, extra_edges=edges)
