"""Pools that outgrow their presizing inside a run (rpexec.pool_growth, rpexec.warmup): the iterations
it happened in are named and left out of the steady marks, and the presizing covers a slower STEP."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rpexec.host_arena import HostArena
from rpexec.hostparams import HostParams
from rpexec.model import build_layers
from rpexec.pool_growth import growth_iterations, slabs_in_run, without_growth
from rpexec.session import RunOptions, run_plan
from rpexec.warmup import PRESIZE_STEP_SLOWDOWN, pool_demand, predicted_pool_demand
from rpsim.scenario import scenario_from_setup
from rpsim.sim.simulate import simulate
from rpsim.validate_run import iteration_ends_s
from tests.test_rpexec_warmup import model_and_shape, plans  # noqa: F401 (the plans fixture)


def test_a_slab_counts_in_the_iteration_whose_span_holds_its_start():
    ends = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0}
    assert growth_iterations([1, 2, 3], ends, [0.5, 2.0, 3.5]) == [1, 3]  # 2.0 ends iteration 1's span
    assert growth_iterations([1, 2, 3], ends, []) == []
    assert without_growth([1, 2, 3], [1, 3]) == [2]
    assert without_growth([1, 2], [1, 2]) == [1, 2]  # none would be left: the marks stay
    assert slabs_in_run([(9.0, 0.4, 1 << 30), (10.5, 0.3, 1 << 30)], 10.0) == [[0.5, 0.3, 1 << 30]]


@pytest.mark.parametrize("schedule", ["roundpipe", "roundpipe-sync"])
def test_presizing_covers_the_plan_with_a_slower_step(plans, schedule):  # noqa: F811
    plan = plans[schedule]
    model, seq, mb, _ = model_and_shape(plan)
    host = HostParams(build_layers(model), torch.float32, pin=False, lag=2)
    shapes = [[tuple(p.shape) for p in layer.parameters()] for layer in host.layers]
    act_shape = (mb, seq, model.hidden)
    at_prediction = pool_demand(plan, simulate(plan, scenario_from_setup(plan.setup, plan.n_gpus)).trace, shapes,
                                act_shape, torch.float32)
    grads, acts = predicted_pool_demand(plan, host, act_shape, torch.float32)
    assert PRESIZE_STEP_SLOWDOWN > 1
    assert grads | at_prediction[0] == grads and acts | at_prediction[1] == acts  # never less than before
    assert sum(grads.values()) >= sum(at_prediction[0].values()) > 0


@pytest.fixture
def slow_steps_in_iteration_4(monkeypatch):
    """Each STEP of iteration 4 starts 50 ms late, so the downloads behind it wait in the gradient pool
    longer than in any earlier iteration and the pool takes new buffers in the run's second half."""
    import time

    from rpexec import runtime
    step = runtime.HANDLERS["STEP"]

    def late(ctx, gpu, action):
        if action.it == 4:
            time.sleep(0.05)
        return step(ctx, gpu, action)
    monkeypatch.setitem(runtime.HANDLERS, "STEP", late)


def test_iterations_that_grew_a_pool_are_not_steady(plans, monkeypatch, slow_steps_in_iteration_4):  # noqa: F811
    """With 4 KiB slabs every buffer a pool takes for the first time is a slab made in the run. The
    iterations whose span holds a slab's start are named and dropped from the steady marks."""
    from rpexec.session import steady_iterations
    monkeypatch.setattr(HostArena.__init__, "__defaults__", (4096, False))
    plan = plans["roundpipe"]
    model, seq, mb, _ = model_and_shape(plan)
    trace = run_plan(plan, model, seq, mb, RunOptions(blocks=2, warmup=False)).trace
    meta = trace.meta
    slabs = [s for v in meta["pool_slabs"].values() for s in v]
    assert slabs and all(s[0] >= 0 and s[2] > 0 for s in slabs)
    ends = iteration_ends_s(trace)
    marked = steady_iterations(plan, 2 * plan.n_iters, False)
    holds_slab = {i for i in marked if any(ends[i - 1] < s[0] <= ends[i] for s in slabs)}
    assert holds_slab, "the slow STEPs make the gradient pool grow after the first iterations"
    assert meta["pool_growth_iterations"] == sorted(holds_slab)
    assert meta["steady_iterations"] == [i for i in marked if i not in holds_slab]
