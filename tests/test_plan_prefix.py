"""A run at steady state builds only the iterations it needs (rpsim.planner.make_plan_prefix,
rpsim.steady_run.simulate_planned): the plan of the first k iterations is the whole plan cut to them, every
action of an async plan's iteration i >= 2 waits (through ancestors) on a host-lane action of iteration
i - 2 or i - 1 (what rpsim.steady_run.runs_as_whole_plan relies on), and a prefix's run is kept only when
it is the whole plan's run: same trace, same metrics, same plan."""
from __future__ import annotations

from collections import deque
from dataclasses import replace

import pytest

from rpsim.ir import CPU
from rpsim.ir.deps import dependency_facts
from rpsim.planner import PlanRequest, make_plan, make_plan_prefix, roundpipe_library_request
from rpsim.scenario import make_scenario
from rpsim.sim.simulate import simulate
from rpsim.sim.steady import first_iterations
from rpsim.specs import TrainingSpec
from rpsim.steady_run import LOOKAHEAD_ITERS, runs_as_whole_plan, simulate_planned, steady_plan


def _scenario(gpus: str = "4090x8", n_mb: int = 8):
    # Qwen3-1.7B, one sequence per microbatch on 8 RTX 4090s: a dispatch period of 8 iterations, 12 planned,
    # 6 simulated before the run is steady.
    return make_scenario("qwen3-1.7b", gpus, TrainingSpec(seq_len=2048, global_batch=n_mb, mb_size=1))


REQUESTS = {
    "roundpipe pcie": PlanRequest("roundpipe"),
    "roundpipe hop": PlanRequest("roundpipe", fidelity="hop"),
    "roundpipe ideal": PlanRequest("roundpipe", fidelity="ideal"),
    "roundpipe library": replace(roundpipe_library_request(8), n_iters=10),  # one round: 5 by default
    "roundpipe deferred W": PlanRequest("roundpipe", defer_w=True),
    "roundpipe earliest-free": PlanRequest("roundpipe", g0_rule="earliest-free"),
    "roundpipe rounds of 3": PlanRequest("roundpipe", round_size=3),
}


@pytest.fixture(scope="module")
def whole_plans():
    sc = _scenario()
    return sc, {name: make_plan(sc, req) for name, req in REQUESTS.items()}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_the_plan_of_the_first_iterations_is_the_whole_plan_cut(whole_plans, name):
    sc, plans = whole_plans
    whole = plans[name]
    assert whole.n_iters > 7  # else there is nothing to cut
    for k in (3, 7):
        prefix, planned = make_plan_prefix(sc, REQUESTS[name], k)
        assert planned == whole.n_iters
        # A lane whose actions all belong to later iterations is empty in the prefix, absent from the cut.
        assert prefix.with_lanes({lane: acts for lane, acts in prefix.lanes.items() if acts}) == \
            first_iterations(whole, k)
    assert make_plan_prefix(sc, REQUESTS[name], whole.n_iters + 5)[0] == whole


def _latest_anchor_before(plan) -> dict[int, int]:
    """Per node id: the latest iteration of an ancestor anchor (a host-lane action, or any action when the
    plan has no host lane) in an earlier iteration than the node's; -1 if none. Ancestors: the engine's
    wait lists and lane orders."""
    facts = dependency_facts(plan)
    nodes = facts.nodes
    has_host = any(gpu == CPU for gpu, _lane in plan.lanes)
    anchor = [gpu == CPU or not has_host for gpu, _a in nodes]
    preds: list[list[int]] = [list(w) for w in facts.waits]
    for lane in facts.lanes:
        for before, after in zip(lane, lane[1:]):
            preds[after].append(before)
    succs: list[list[int]] = [[] for _ in nodes]
    for v, ps in enumerate(preds):
        for u in ps:
            succs[u].append(v)
    it = [a.it for _gpu, a in nodes]
    upto = [-1] * len(nodes)  # latest anchor iteration among ancestors-or-self
    before = [-1] * len(nodes)  # latest anchor iteration among ancestors of an earlier iteration
    left = [len(ps) for ps in preds]
    ready = deque(i for i, n in enumerate(left) if n == 0)
    while ready:
        v = ready.popleft()
        for u in preds[v]:
            assert it[u] <= it[v], (nodes[u], nodes[v])  # nothing waits on a later iteration
            before[v] = max(before[v], upto[u] if it[u] < it[v] else before[u])
            upto[v] = max(upto[v], upto[u])
        if anchor[v]:
            upto[v] = it[v]
        for w in succs[v]:
            left[w] -= 1
            if not left[w]:
                ready.append(w)
    assert not any(left)  # acyclic: every node was reached
    return dict(enumerate(before))


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_every_later_iteration_waits_on_a_host_step_of_one_of_the_two_before(whole_plans, name):
    _sc, plans = whole_plans
    plan = plans[name]
    nodes = dependency_facts(plan).nodes
    for i, latest in _latest_anchor_before(plan).items():
        if nodes[i][1].it >= LOOKAHEAD_ITERS:
            assert latest >= nodes[i][1].it - LOOKAHEAD_ITERS, nodes[i]


def test_the_lookahead_test_finds_an_action_that_waits_on_nothing_older():
    """The property above fails for a plan where an action of a later iteration waits on nothing of the
    two before it: iteration 2's actions with their links to iterations 0-1 cut off (iteration 2 alone)."""
    sc = _scenario()
    plan = make_plan(sc, PlanRequest("roundpipe", n_iters=3))
    cut = {lane: tuple(a for a in actions if a.it == 2) for lane, actions in plan.lanes.items()}
    edges = tuple((u, v) for u, v in plan.extra_edges if u[1].it == 2 and v[1].it == 2)
    lone = replace(plan.with_lanes({k: v for k, v in cut.items() if v}), extra_edges=edges)
    assert all(latest < 0 for latest in _latest_anchor_before(lone).values())


def _same_run(a, b) -> bool:
    return a.plan == b.plan and a.trace.events == b.trace.events and a.metrics == b.metrics


def test_a_prefix_run_that_stopped_before_the_lookahead_is_kept_and_is_the_whole_plans_run():
    sc = _scenario()
    req = PlanRequest("roundpipe")
    whole = simulate(make_plan(sc, req), sc)
    assert whole.metrics["n_iters"] == 6 and whole.metrics["planned_iters"] == 12
    prefix, planned = make_plan_prefix(sc, req, 8)
    run = simulate(prefix, sc, planned_iters=planned)
    assert runs_as_whole_plan(run, 8)
    assert _same_run(run, whole)
    assert _same_run(simulate_planned(sc, req, 8), whole)
    assert steady_plan(sc, req)[0] == whole.plan  # what `rpsim export` writes


def test_a_prefix_run_too_short_to_tell_is_not_kept():
    """With 7 iterations built, the run stops after iteration 5 when the host has finished steps of
    iteration 5 = 7 - LOOKAHEAD_ITERS: a later iteration might have started; the whole plan is simulated."""
    sc = _scenario()
    req = PlanRequest("roundpipe")
    prefix, planned = make_plan_prefix(sc, req, 7)
    assert not runs_as_whole_plan(simulate(prefix, sc, planned_iters=planned), 7)
    assert _same_run(simulate_planned(sc, req, 7), simulate(make_plan(sc, req), sc))
    # A prefix run that ran to its end (no steady stop) is never kept.
    short, _ = make_plan_prefix(sc, req, 4)
    assert not runs_as_whole_plan(simulate(short, sc, planned_iters=planned), 4)
