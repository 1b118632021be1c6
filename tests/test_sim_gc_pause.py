"""make_plan and simulate pause the cyclic garbage collector while they run (rpsim.gc_pause) and leave it
as they found it: library callers get what `rpsim` commands get."""
from __future__ import annotations

import gc

from rpsim import planner
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import make_scenario
from rpsim.sim import simulate as simulate_module
from rpsim.sim.simulate import simulate
from rpsim.specs import TrainingSpec


def test_plan_and_simulation_run_with_the_collector_paused(monkeypatch):
    seen = []
    lower_checked, run_engine = planner.lower_checked, simulate_module.run_engine

    def lowering(*args):
        seen.append(("plan", gc.isenabled()))
        return lower_checked(*args)

    def engine(*args):
        seen.append(("engine", gc.isenabled()))
        return run_engine(*args)

    monkeypatch.setattr(planner, "lower_checked", lowering)
    monkeypatch.setattr(simulate_module, "run_engine", engine)
    sc = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(global_batch=16))
    assert gc.isenabled()
    plan = make_plan(sc, PlanRequest("1f1b"))
    assert gc.isenabled()
    simulate(plan, sc)
    assert gc.isenabled()
    assert seen == [("plan", False), ("engine", False)]
    gc.disable()
    try:  # paused further out: still off after
        simulate(plan, sc)
        assert not gc.isenabled()
    finally:
        gc.enable()
