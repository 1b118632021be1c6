"""Closed forms at the ideal fidelity (compute only, no transfer cost), with uniform per-layer times:

- GPipe and 1F1B, p stages of equal time, m microbatches (Huang et al. 2019; Narayanan et al. 2021,
  Sec. 2.2): makespan (m + p - 1)(t_f + t_b), bubble (p - 1) / (m + p - 1).
- RoundPipe-sync, N GPUs, S stage slots that each take t per microbatch, M a multiple of N: the global
  job sequence (round-major, slot order) puts job j on GPU j mod N; it starts at j * t, because its
  GPU's previous job j - N ends then and its input (job j - 1, one microbatch ahead) arrives then.
  With M*S/N jobs the makespan is (M*S/N + N - 1) t, so bubble = N(N-1) / (M*S + N(N-1)).
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from rpsim.costs.profile import profile_from_dict
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import Scenario, make_scenario
from rpsim.sim.action_costs import duration_s
from rpsim.sim.simulate import cost_context, simulate
from rpsim.specs import ModelSpec, TrainingSpec

# Dyadic times (exact in binary floating point), so sums of them and the makespan are exact.
F_S, B_S = 0.25, 0.5  # per layer; recompute defaults to forward


def uniform_scenario(n_layers: int, n_gpus: int, n_mb: int, f_s: float = F_S, b_s: float = B_S) -> Scenario:
    """A small dense model whose transformer layers all take f_s / b_s; embedding and head take 0."""
    model = ModelSpec(name=f"uniform-{n_layers}", n_layers=n_layers, hidden=256, n_heads=4, n_kv_heads=2,
                      head_dim=64, mlp_width=512, vocab=1024)
    layers = [{"name": "embed", "forward_s": 0.0, "backward_s": 0.0}]
    layers += [{"name": f"layer.{i}", "forward_s": f_s, "backward_s": b_s} for i in range(n_layers)]
    layers += [{"name": "head", "forward_s": 0.0, "backward_s": 0.0}]
    profile = profile_from_dict({"format": "rpsim.profile", "version": 1, "layers": layers})
    sc = make_scenario(model, f"4090x{n_gpus}", TrainingSpec(seq_len=128, global_batch=n_mb, mb_size=1))
    return replace(sc, costs=profile.apply(sc.costs), profile=profile)


def _bubble_parts_add_up(metrics: dict) -> None:
    parts = sum(metrics[k] for k in ("bubble_fill", "bubble_drain", "bubble_switch", "bubble_intra"))
    assert parts == pytest.approx(metrics["bubble"], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p, m", [(2, 1), (2, 5), (3, 3), (4, 8), (4, 11), (6, 2), (6, 12)])
def test_gpipe_and_1f1b_closed_forms(schedule, p, m):
    k = 12 // p  # 12 transformer layers, k per stage
    sc = uniform_scenario(12, p, m)
    plan = make_plan(sc, PlanRequest(schedule, fidelity="ideal", partition=",".join([str(k)] * p)))
    t_f, t_b = k * F_S, k * (B_S + F_S)  # backward recomputes the stage's forward (recompute "stage")
    result = simulate(plan, sc)
    assert result.trace.makespan_s == (m + p - 1) * (t_f + t_b)
    assert result.metrics["iteration_s"] == (m + p - 1) * (t_f + t_b)
    assert result.metrics["bubble"] == pytest.approx((p - 1) / (m + p - 1), rel=1e-12)
    _bubble_parts_add_up(result.metrics)


def test_1f1b_and_gpipe_take_the_same_time_but_differ_in_order():
    # Same closed form, different schedules: guards against both names building the same plan.
    sc = uniform_scenario(12, 4, 8)
    plans = [make_plan(sc, PlanRequest(s, fidelity="ideal", partition="3,3,3,3")) for s in ("gpipe", "1f1b")]
    assert plans[0].lane(0, "compute") != plans[1].lane(0, "compute")
    assert simulate(plans[0], sc).trace.makespan_s == simulate(plans[1], sc).trace.makespan_s


# RoundPipe-sync with every stage slot taking t = 3 s per microbatch (f = 1, b = 2, recompute = f):
# forward stages of 3 layers (3 f), backward stages of 1 layer (recompute + backward), and the fused
# last stage of 1 layer plus the (free) head (forward + backward, nothing recomputed).
RP_LAYERS = 13
RP_SPEC = "3,3,3,3|" + ",".join(["1"] * RP_LAYERS)  # 4 forward stages; fused + 12 backward stages
RP_SLOTS = 4 + RP_LAYERS
RP_T = 3.0


@pytest.mark.parametrize("n, m", [(2, 2), (2, 6), (3, 3), (3, 9), (4, 8), (8, 8), (8, 16)])
def test_roundpipe_sync_uniform_stages_bubble(n, m):
    assert m % n == 0  # the formula's precondition: every round holds N microbatches
    sc = uniform_scenario(RP_LAYERS, n, m, f_s=1.0, b_s=2.0)
    plan = make_plan(sc, PlanRequest("roundpipe-sync", fidelity="ideal", partition=RP_SPEC))
    ctx = cost_context(plan, sc)
    # The other precondition: every compute action (one stage slot for one microbatch) takes t.
    assert len(plan.partition.fwd) + len(plan.partition.bwd) == RP_SLOTS
    assert {duration_s(ctx, a) for _, a in plan.compute_actions()} == {RP_T}
    result = simulate(plan, sc)
    assert result.trace.makespan_s == (m * RP_SLOTS / n + n - 1) * RP_T
    assert result.metrics["bubble"] == pytest.approx(n * (n - 1) / (m * RP_SLOTS + n * (n - 1)), rel=1e-12)
    _bubble_parts_add_up(result.metrics)
