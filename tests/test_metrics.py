"""Metrics of a trace: the bubble split on a trace drawn by hand, the compare acceptance figure (3/11)
through the CLI, and async RoundPipe's steady-state iteration time against its optimizer bound."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from rpsim.cli.main import main
from rpsim.costs.profile import profile_from_dict
from rpsim.metrics import bubble_breakdown
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import Scenario, make_scenario
from rpsim.sim.simulate import simulate
from rpsim.sim.trace import Trace, TraceEvent
from rpsim.specs import ModelSpec, TrainingSpec


def _ev(gpu: int, kind: str, start: float, end: float, lane: str = "compute") -> TraceEvent:
    return TraceEvent(gpu=gpu, lane=lane, action=f"0{kind}{int(start)}", kind=kind, stage=0, mb=int(start),
                      it=0, start_s=start, end_s=end)


# GPU 0: F [0,2] F [2,4] . . B [6,8] . .     gaps: [4,6] F->B (switch), [8,10] drain
# GPU 1: . F [1,3] B [3,5] . . F [7,9] .     gaps: [0,1] fill, [5,7] B->F (intra), [9,10] drain
HAND = Trace((_ev(0, "F", 0, 2), _ev(0, "F", 2, 4), _ev(0, "B", 6, 8), _ev(1, "F", 1, 3), _ev(1, "B", 3, 5),
              _ev(1, "F", 7, 9), _ev(0, "LOAD", 4, 6, lane="param_h2d"), _ev(1, "F", 6, 6)))


def test_bubble_split_of_a_hand_drawn_trace():
    b = bubble_breakdown(HAND, 2, 0.0, 10.0, steady=False)
    assert (b.fill, b.drain, b.switch, b.intra) == (1 / 20, 3 / 20, 2 / 20, 2 / 20)
    assert b.bubble == 8 / 20
    assert b.busy_s == (6.0, 6.0) and b.megatron == 8 / 12  # idle over busy compute (Megatron's convention)


def test_a_steady_state_window_has_no_fill_or_drain():
    b = bubble_breakdown(HAND, 2, 0.0, 10.0, steady=True)
    assert (b.fill, b.drain, b.switch) == (0.0, 0.0, 2 / 20)
    assert b.intra == pytest.approx(6 / 20) and b.bubble == 8 / 20


def test_only_the_turn_into_the_first_backward_is_switch():
    # F [0,1] F [1,2] . B [3,4] F [4,5] . B [6,7]: the gap before the first backward is the switch; the
    # later F -> B wait (1F1B's steady state) is intra, as is a B -> F gap; iteration 1 turns again.
    trace = Trace((_ev(0, "F", 0, 1), _ev(0, "F", 1, 2), _ev(0, "B", 3, 4), _ev(0, "F", 4, 5), _ev(0, "B", 6, 7),
                   replace(_ev(0, "F", 7, 8), it=1), replace(_ev(0, "B", 9, 10), it=1)))
    b = bubble_breakdown(trace, 1, 0.0, 10.0, steady=False)
    assert (b.switch, b.intra, b.fill, b.drain) == (2 / 10, 1 / 10, 0.0, 0.0)


def test_compare_reports_the_closed_form_bubble_3_over_11(tmp_path, capsys):
    # qwen3-1.7b: 28 transformer layers; 4 stages of 7 equal layers, 8 microbatches: (p-1)/(m+p-1) = 3/11.
    layers = [{"name": "embed", "forward_s": 0.0, "backward_s": 0.0}]
    layers += [{"name": f"layer.{i}", "forward_s": 0.01, "backward_s": 0.02} for i in range(28)]
    layers += [{"name": "head", "forward_s": 0.0, "backward_s": 0.0}]
    profile = tmp_path / "uniform.json"
    profile.write_text(json.dumps({"format": "rpsim.profile", "version": 1, "layers": layers,
                                   "links": {"hop_s": 0.0}}))
    code = main(["compare", "--model", "qwen3-1.7b", "--gpus", "4090x4", "--fidelity", "ideal", "--profile",
                 str(profile), "--n-mb", "8", "--schedules", "gpipe,1f1b", "--format", "json",
                 "--loss-chunk-tokens", "2048"])  # full logits of 16k tokens x 152k vocab: 28 GiB
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert sorted(r["schedule"] for r in rows) == ["1f1b", "gpipe"]
    for r in rows:
        assert r["bubble"] == pytest.approx(3 / 11, rel=1e-12)
        assert r["iteration_s"] == pytest.approx(11 * 7 * (0.01 + 0.02 + 0.01), rel=1e-12)  # B recomputes F


# --- async RoundPipe: a steady-state iteration ---------------------------------------------------------

def _async_scenario(adam_params_per_s: float) -> Scenario:
    model = ModelSpec(name="tiny", n_layers=8, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
                      mlp_width=512, vocab=1024)
    layers = [{"name": "embed", "forward_s": 0.001, "backward_s": 0.001}]
    layers += [{"name": f"layer.{i}", "forward_s": 0.01, "backward_s": 0.02} for i in range(8)]
    layers += [{"name": "head", "forward_s": 0.002, "backward_s": 0.004}]
    profile = profile_from_dict({"format": "rpsim.profile", "version": 1, "layers": layers,
                                 "cpu": {"adam_params_per_s": adam_params_per_s}})
    sc = make_scenario(model, "4090x4", TrainingSpec(seq_len=128, global_batch=16, mb_size=2))
    return replace(sc, costs=profile.apply(sc.costs), profile=profile)


def _optimizer_s(sc: Scenario) -> float:
    """The CPU optimizer's work per iteration: every layer's Adam step, one after another on one lane."""
    return sum(x.trainable_params for x in sc.costs.layers) / sc.profile.adam_params_per_s  # type: ignore[union-attr]


@pytest.mark.parametrize("n_iters", [3, 5])
def test_async_iteration_with_a_slow_optimizer_is_the_optimizer_bound(n_iters):
    sc = _async_scenario(1.0)
    params = sum(x.trainable_params for x in sc.costs.layers)
    # 20 s of Adam, ~1 s compute; gradient accumulation made free, so the bound is Adam's alone
    sc = replace(sc, profile=replace(sc.profile, adam_params_per_s=params / 20.0, grad_accumulate_params_per_s=1e30))
    bound = _optimizer_s(sc)
    m = simulate(make_plan(sc, PlanRequest("roundpipe", n_iters=n_iters)), sc).metrics
    sync = simulate(make_plan(sc, PlanRequest("roundpipe-sync")), sc).metrics
    assert m["steady_state"] and not sync["steady_state"]
    # Staleness 1 hides the compute behind the optimizer: an iteration takes the optimizer's time, not
    # compute + optimizer as a flushed iteration does, and not half of it (a warm-up span averaged in).
    assert bound * (1 - 1e-9) <= m["iteration_s"] <= bound * 1.02
    assert sync["iteration_s"] > bound + 0.1


def test_cpu_step_sums_one_download_per_round_then_runs_adam():
    """Closed form of rpsim.costs.cpu_optimizer: STEP(layer) = P / adam + n * P / accumulate, with n the
    layer's gradient downloads that iteration (RoundPipe: one per round)."""
    sc = _async_scenario(1.0)
    sc = replace(sc, profile=replace(sc.profile, adam_params_per_s=1e9, grad_accumulate_params_per_s=5e8))
    plan = make_plan(sc, PlanRequest("roundpipe-sync"))
    rounds = len(plan.options["round_sizes"])
    result = simulate(plan, sc)
    steps = [e for e in result.trace.events if e.kind == "STEP"]
    assert steps and rounds > 1
    for e in steps:
        layer = int(e.action.split(".c")[1])
        p = sc.costs.layers[layer].trainable_params
        assert e.end_s - e.start_s == pytest.approx(p / 1e9 + rounds * p / 5e8, rel=1e-9)


def test_async_iteration_with_a_fast_optimizer_beats_the_flushed_one():
    sc = _async_scenario(1e15)
    assert _optimizer_s(sc) < 1e-6
    m = simulate(make_plan(sc, PlanRequest("roundpipe")), sc).metrics
    longer = simulate(make_plan(sc, PlanRequest("roundpipe", n_iters=6)), sc).metrics
    sync = simulate(make_plan(sc, PlanRequest("roundpipe-sync")), sc).metrics
    assert m["iteration_s"] < sync["iteration_s"]
    # A steady state: the same figure however many iterations were simulated, and no fill or drain.
    assert m["iteration_s"] == pytest.approx(longer["iteration_s"], rel=1e-3)
    lo, hi = m["window_s"]
    assert m["n_iters"] >= 3 and 0 < lo < hi  # the window starts after the warm-up iterations
    assert m["bubble_fill"] == 0.0 and m["bubble_drain"] == 0.0


def test_steady_iteration_leaves_out_the_warm_up_spans():
    """Iterations ending at 1, 3, 6 and 10 s: spans 2, 3, 4 s. skip=1 drops the first two spans' worth
    (the first iteration and one more): mean of 3 and 4; skip=0 keeps 2, 3, 4; one iteration: its end."""
    from rpsim.sim.trace import Trace, TraceEvent
    from rpsim.validate_run import steady_iteration_s
    ends = [1.0, 3.0, 6.0, 10.0]
    trace = Trace(tuple(TraceEvent(0, "compute", f"0F{i}", "F", 0, 0, i, e - 0.5, e) for i, e in enumerate(ends)), {})
    assert steady_iteration_s(trace, skip=1) == pytest.approx(3.5)
    assert steady_iteration_s(trace, skip=0) == pytest.approx(3.0)
    assert steady_iteration_s(Trace(trace.events[:1], {})) == pytest.approx(1.0)
