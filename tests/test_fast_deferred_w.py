"""The fast estimate of RoundPipe plans with deferred W (rpsim.search.fast_deferred_w) against the full
simulator, on every deferred-W plan (both optimizer modes, every round size and partitioner) of two small
scenarios: iteration time and peak GPU memory within stated tolerances of simulate()'s, as close as the
same estimate is on the same plan without deferred W, and a better proxy than the estimate that ignores
the split (what search would have without it)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from rpsim.scenario import make_scenario
from rpsim.schedules.roundpipe import deferred_w_order
from rpsim.search.fast_deferred_w import DeferredW
from rpsim.search.fast_eval import estimate
from rpsim.search.run import analytic
from rpsim.search.space import Candidate, enumerate_candidates, plan_request
from rpsim.search.workspace import Workspace
from rpsim.specs import TrainingSpec
from rpsim.steady_run import simulate_request

# |estimate / simulated - 1| of the iteration time: the async plans of qwen3-8b on four GPUs estimate
# 6-8% short with deferred W or without, as the list timer does (benchmarks/notes-search.md, session 13).
ITERATION_RTOL = 0.09
TWIN_ITERATION_SLACK = 0.01  # the error may exceed the same estimate's on the plan without deferred W by this
# Peak GPU memory: never under by more than MEMORY_UNDER; over by up to TWIN_MEMORY_SLACK beyond the same
# estimate's overestimate of the plan without deferred W. That overestimate reaches +51% on async plans of
# several rounds, whose gradients the estimate holds as pending downloads at the peak (in the simulator
# the previous iteration's optimizer steps have freed their staging by then); MEMORY_OVER bounds both.
MEMORY_UNDER = 0.02
TWIN_MEMORY_SLACK = 0.15
MEMORY_OVER = 0.55


def deferred_plans(ws: Workspace) -> list[Candidate]:
    return [ws.resolve(c) for c in enumerate_candidates(ws.base, ("roundpipe", "roundpipe-sync"))
            if c.defer_w and c.recompute == "stage" and c.mb_size == ws.base.training.mb_size]


def relative_errors(ws: Workspace, c: Candidate) -> dict[str, tuple[float, float]]:
    """(iteration, peak GPU memory) errors against the simulator: "new", the estimate of the deferred-W
    plan; "ignoring", the estimate without the split for the same plan; "twin", the estimate of the plan
    without deferred W against that plan's simulation."""
    ctx, part, sc = ws.context(c.mb_size, c.recompute), ws.partition(c), ws.scenario(c.mb_size, c.recompute)

    def simulated(plan: Candidate) -> tuple[float, float]:
        m = simulate_request(sc, plan_request(plan)).metrics
        return m["iteration_s"], max(m["peak_gpu_mem_bytes"])

    def err(defer_w: bool, truth: tuple[float, float]) -> tuple[float, float]:
        e = estimate(ctx, c.schedule, part, 1, c.round_size, defer_w)
        return e.iteration_s / truth[0] - 1, e.peak_gpu_bytes / truth[1] - 1
    sim, sim_twin = simulated(c), simulated(replace(c, defer_w=False))
    return {"new": err(True, sim), "ignoring": err(False, sim), "twin": err(False, sim_twin)}


@pytest.mark.parametrize("model, gpus, mb", [("llama3-8b", "4090x8", 1), ("qwen3-8b", "4090x4", 2)])
def test_deferred_w_estimate_is_close_to_the_simulator_and_better_than_ignoring_the_split(model, gpus, mb):
    ws = Workspace(make_scenario(model, gpus, TrainingSpec(global_batch=16, mb_size=mb)))
    plans = deferred_plans(ws)
    assert {c.schedule for c in plans} == {"roundpipe", "roundpipe-sync"} and len(plans) == 8
    rows = {c.label(): relative_errors(ws, c) for c in plans}
    for label, r in rows.items():
        (it, mem), (twin_it, twin_mem) = r["new"], r["twin"]
        assert abs(it) <= ITERATION_RTOL and abs(it) <= abs(twin_it) + TWIN_ITERATION_SLACK, (label, r)
        assert -MEMORY_UNDER <= mem <= min(MEMORY_OVER, max(twin_mem, 0.0) + TWIN_MEMORY_SLACK), (label, r)
    # Ignoring the split: no closer in time on average, and short of the memory the I passes keep for
    # their W passes by 14-17% on some plan of each scenario (never more than MEMORY_UNDER here).
    assert (sum(abs(r["new"][0]) for r in rows.values())
            <= sum(abs(r["ignoring"][0]) for r in rows.values()) + 1e-9), rows
    assert min(r["ignoring"][1] for r in rows.values()) < -0.10, rows


@pytest.mark.parametrize("size", range(1, 7))
def test_the_job_shape_follows_the_builders_order(size):
    """W passes after the last I, when the first W starts, and the most kept inputs beside an I and beside
    a W, counted off rpsim.schedules.roundpipe.deferred_w_order (unit costs: I and W 1 s, kept input 1 B,
    no working set or gradients)."""
    order = deferred_w_order(0, tuple(range(size)), 0)
    last_i = max(k for k, a in enumerate(order) if a.kind == "I")
    first_w = next(k for k, a in enumerate(order) if a.kind == "W")
    kept, most_beside = 0, {"I": 0, "W": 0}
    for a in order:
        most_beside[a.kind] = max(most_beside[a.kind], kept)  # inputs kept by earlier I passes
        kept += 1 if a.kind == "I" else -1
    job = DeferredW(w_s=1.0, held_bytes=1.0, i_work_bytes=0.0, w_work_bytes=0.0)
    assert job.tail_s(size) == len(order) - 1 - last_i
    # A W runs beside its own I's kept input too (counted above as kept before it).
    assert job.phases(size, 1.0, 0.0) == ((0.0, most_beside["I"]), (first_w, most_beside["W"]))


def test_search_estimates_deferred_w_analytically():
    """No RoundPipe plan, deferred W or not, is list-timed any more; the zero-bubble family still is."""
    sc = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(global_batch=8))
    cands = enumerate_candidates(sc)
    assert any(c.defer_w for c in cands)
    assert all(analytic(c) for c in cands if c.defer_w)
    assert any(not analytic(c) for c in cands)
