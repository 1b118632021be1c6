"""Zero-bubble closed forms at the ideal fidelity (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR
2024, Sec. 3 and 6), with F = I = W = t per stage (recompute none: backward 2t split evenly into I and W,
so 1F1B's full backward is 2t) and p GPUs:

- 1F1B: every GPU idles (p - 1)(t_F + t_B) = (p - 1) 3t in an iteration of makespan (m + p - 1) 3t.
- ZB-H1: every GPU idles (p - 1) t: the deferred W passes fill 1F1B's drain, makespan 3mt + (p - 1) t.
- ZB-V (2p stages of t/2 each: the same model cut twice as fine): between its first and its last action
  no GPU idles once m >= 2p - 1 (the V is full). What remains is the fill of one chunk, (p - 1) t/2 per
  GPU: GPU p - 1's first forward needs the p - 1 forwards before it, and every GPU does the same work,
  so no order can remove it; the paper's "zero bubble" is this steady state."""
from __future__ import annotations

from dataclasses import replace

import pytest

from rpsim.planner import PlanRequest, make_plan
from rpsim.sim.simulate import simulate
from tests.test_sim_closed_forms import uniform_scenario

F_S = 0.25  # per layer; backward 2 F_S, so I = W = F


def _run(schedule: str, p: int, m: int, n_stages: int, n_layers: int = 24):
    sc = uniform_scenario(n_layers, p, m, f_s=F_S, b_s=2 * F_S)
    sc = replace(sc, training=replace(sc.training, recompute="none"))
    k = n_layers // n_stages
    plan = make_plan(sc, PlanRequest(schedule, fidelity="ideal", partition=",".join([str(k)] * n_stages),
                                     virtual_stages=n_stages // p))
    trace = simulate(plan, sc).trace
    per_gpu = [[e for e in trace.events if e.gpu == g] for g in range(p)]
    busy = [sum(e.end_s - e.start_s for e in evs) for evs in per_gpu]
    span = [max(e.end_s for e in evs) - min(e.start_s for e in evs) for evs in per_gpu]
    return k * F_S, trace.makespan_s, busy, span


@pytest.mark.parametrize("p, m", [(2, 4), (3, 6), (4, 8), (4, 12)])
def test_zb_h1_idles_a_third_of_1f1b(p, m):
    t, makespan, busy, _ = _run("1f1b", p, m, p)
    assert makespan == (m + p - 1) * 3 * t
    assert [makespan - b for b in busy] == [(p - 1) * 3 * t] * p
    t, makespan, busy, _ = _run("zb-h1", p, m, p)
    assert makespan == 3 * m * t + (p - 1) * t
    assert [makespan - b for b in busy] == [(p - 1) * t] * p


@pytest.mark.parametrize("p, m", [(2, 3), (2, 8), (3, 5), (3, 12), (4, 7), (4, 16)])
def test_zbv_has_no_bubble_between_first_and_last_action(p, m):
    assert m >= 2 * p - 1
    t_chunk, makespan, busy, span = _run("zbv", p, m, 2 * p)
    assert span == busy  # no idle inside any GPU's run
    assert [makespan - b for b in busy] == [(p - 1) * t_chunk] * p  # only the one-chunk fill
    assert makespan == 2 * 3 * m * t_chunk + (p - 1) * t_chunk
