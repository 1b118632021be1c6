"""Steady state detected rather than enumerated: a rotating RoundPipe plan stops once its iteration time
converged, and its figures match a run of every planned iteration within the 0.1% tolerance."""
from __future__ import annotations

import re

import pytest

from rpsim.cli.main import main
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import make_scenario
from rpsim.sim.simulate import simulate
from rpsim.specs import TrainingSpec


@pytest.fixture(scope="module")
def rotating():
    # 16 GPUs, 16 microbatches of one sequence: the dispatch repeats after 16 iterations (19 planned).
    sc = make_scenario("qwen3-8b", "h100x16", TrainingSpec(seq_len=2048, global_batch=16, mb_size=1))
    plan = make_plan(sc, PlanRequest("roundpipe"))
    return sc, plan, simulate(plan, sc), simulate(plan, sc, stop_at_steady=False)


def test_a_rotating_plan_stops_early_within_the_tolerance(rotating):
    _sc, plan, stopped, full = rotating
    assert plan.n_iters == 19 and full.metrics["n_iters"] == 19
    assert 6 <= stopped.metrics["n_iters"] < 19 and stopped.metrics["planned_iters"] == 19
    assert stopped.plan.n_iters == stopped.metrics["n_iters"]
    assert max(e.it for e in stopped.trace.events) == stopped.metrics["n_iters"] - 1
    for key in ("iteration_s", "tokens_per_s", "mfu", "bubble"):
        assert stopped.metrics[key] == pytest.approx(full.metrics[key], rel=1e-3)
    # Per-GPU peaks cover the iterations simulated (the dispatch rotates, so a GPU may not have met its
    # heaviest job yet); the peak over GPUs, which decides feasibility, is the same.
    assert max(stopped.metrics["peak_gpu_mem_bytes"]) == max(full.metrics["peak_gpu_mem_bytes"])
    assert stopped.metrics["feasible"] == full.metrics["feasible"]


def test_the_stopped_trace_is_the_full_one_cut_at_the_kept_iterations(rotating):
    _sc, _plan, stopped, full = rotating
    n = stopped.metrics["n_iters"]
    early = [e for e in full.trace.events if e.it < n - 1]  # before the kept drain iteration
    assert [e for e in stopped.trace.events if e.it < n - 1] == early


def test_flushed_plans_and_short_async_plans_run_every_iteration():
    sc = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(global_batch=16))
    for schedule in ("roundpipe", "1f1b"):
        plan = make_plan(sc, PlanRequest(schedule))
        m = simulate(plan, sc).metrics
        assert m["n_iters"] == m["planned_iters"] == plan.n_iters


def test_compare_reports_the_iterations_simulated(capsys):
    main(["compare", "--model", "qwen3-1.7b", "--gpus", "4090x4", "--global-batch", "16",
          "--schedules", "roundpipe,1f1b"])
    out = capsys.readouterr().out
    assert re.search(r"# note: roundpipe: \d+ iterations simulated", out)
    assert "1f1b: " not in out.split("# note: roundpipe")[1]
