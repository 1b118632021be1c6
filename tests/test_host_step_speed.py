"""rpsim.host_step_speed and validate's diagnosis: a run that differs from the prediction only in its host
STEP's speed is recovered exactly, factor and iteration."""
from __future__ import annotations

import pytest

from rpsim.costs.cpu_optimizer import cpu_optimizer_rates
from rpsim.host_step_speed import with_host_step_slower
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import make_scenario
from rpsim.sim.simulate import simulate
from rpsim.specs import TrainingSpec
from rpsim.validate_run import validate

TRAINING = TrainingSpec(seq_len=512, global_batch=8, mb_size=1)


@pytest.mark.parametrize("server", ["h200x1", "experiments/data/machines/h200x1-16c-s14-call3.toml"])
@pytest.mark.parametrize("threads", [None, 11])
def test_every_step_rate_slows_by_the_factor(server, threads):
    """With the machine file's thread curve, residency curve and cache, a lone STEP over any layer takes
    exactly `factor` times as long."""
    sc = make_scenario("qwen3-1.7b", server, TRAINING)
    slow = with_host_step_slower(sc, 1.37)
    for layer in (sc.costs.layers[0], sc.costs.layers[1]):
        times = []
        for s in (sc, slow):
            rates = cpu_optimizer_rates(s.server.host, s.profile, None, threads)
            resident = rates.layer_resident_params(layer.trainable_params, layer.optimizer_tensors)
            times.append(rates.step_s(layer.trainable_params, 4, resident))
        assert times[1] == pytest.approx(1.37 * times[0], rel=1e-12)


@pytest.mark.parametrize("schedule", ["roundpipe-sync", "roundpipe"])
def test_validate_recovers_a_run_whose_only_difference_is_the_step(schedule):
    """The 'measured' trace is rpsim's own with a STEP 1.3x as slow alone: validate finds the factor and,
    with it, the run's iteration (within 1%: beside the copies, which share the DRAM, a STEP slows by a
    little less than its factor; RoundPipe's STEPs here run alone, so exactly); with the factor 1 nothing
    to find."""
    sc = make_scenario("qwen3-1.7b", "4090x2", TRAINING)
    plan = make_plan(sc, PlanRequest(schedule, fidelity="pcie", n_iters=2))
    measured = simulate(plan, with_host_step_slower(sc, 1.3), stop_at_steady=False).trace
    result = validate(plan, measured, sc)
    given = result["iteration_s_at_measured_step_speed"]
    assert given["step_factor"] == pytest.approx(1.3, rel=0.02)
    assert given["predicted"] == pytest.approx(given["measured"], rel=0.01)
    assert result["iteration_s"]["error"] < -0.01  # the plain prediction is fast by the STEP's share
    same = validate(plan, simulate(plan, sc, stop_at_steady=False).trace, sc)["iteration_s_at_measured_step_speed"]
    assert same["step_factor"] == pytest.approx(1.0) and same["error"] == pytest.approx(0.0, abs=1e-12)


def test_the_factor_must_be_positive():
    with pytest.raises(ValueError, match="must be > 0"):
        with_host_step_slower(make_scenario("qwen3-1.7b", "h200x1", TRAINING), 0.0)
