"""The fast evaluator ranks plans as the full simulator does (Spearman rank correlation on a sample of the
search space), agrees on which plans fit, and picks the same weight policy as the lowering passes."""
from __future__ import annotations

import pytest

from rpsim.planner import make_plan
from rpsim.scenario import make_scenario
from rpsim.search.fast_context import links_of
from rpsim.search.fast_fixed import compute_order, estimate_fixed
from rpsim.search.run import analytic
from rpsim.search.space import Candidate, enumerate_candidates, plan_request
from rpsim.search.workspace import Workspace
from rpsim.sim.simulate import simulate
from rpsim.specs import TrainingSpec

SAMPLE = 14  # per model; microbatch sizes 2 to 8 of a global batch of 32 keep each simulation short


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2  # ties share their mean rank
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / (va * vb) ** 0.5


def test_spearman_helper():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def sample(model: str) -> tuple[Workspace, list[Candidate]]:
    """Every k-th candidate the analytic estimators price, so each of their families and partitioners
    appears (the others are estimated by the list timer: rpsim.search.fast_list)."""
    ws = Workspace(make_scenario(model, "4090x8", TrainingSpec(global_batch=32)))
    cands = [c for c in enumerate_candidates(ws.base) if c.mb_size >= 2 and analytic(c)]
    step = len(cands) // SAMPLE
    return ws, [ws.resolve(c) for c in cands[step // 2::step][:SAMPLE]]


@pytest.mark.parametrize("model", ["qwen3-1.7b", "llama3-8b"])
def test_fast_estimate_ranks_plans_as_the_simulator_does(model):
    ws, cands = sample(model)
    fast, full, fits = [], [], []
    for c in cands:
        sc = ws.scenario(c.mb_size, c.recompute)
        e = ws.estimate(c)
        m = simulate(make_plan(sc, plan_request(c)), sc).metrics
        fast.append(e.iteration_s)
        full.append(m["iteration_s"])
        fits.append(e.feasible == m["feasible"])
    assert len({c.schedule for c in cands}) >= 4
    assert spearman(fast, full) > 0.8, list(zip([c.label() for c in cands], fast, full, strict=True))
    assert sum(fits) >= 0.8 * len(fits)


@pytest.mark.parametrize("schedule, v", [("1f1b", 1), ("gpipe", 1), ("interleaved", 2), ("looped-bfs", 3)])
@pytest.mark.parametrize("model, mb", [("qwen3-1.7b", 4), ("llama3-8b", 1)])
def test_weight_policy_matches_lowering(schedule, v, model, mb):
    """Resident weights (and their GPU optimizer) or streamed ones: the estimate decides as lowering does."""
    ws = Workspace(make_scenario(model, "4090x8", TrainingSpec(mb_size=mb)))
    c = ws.resolve(Candidate(schedule, mb, "stage", "balanced", v))
    plan = make_plan(ws.scenario(mb, "stage"), plan_request(c))
    e = estimate_fixed(ws.context(mb, "stage"), schedule, ws.partition(c), v)
    assert e.resident == (plan.options["weights"] == "resident")


def test_compute_order_reads_the_builders():
    one = compute_order("1f1b", 4, 1, 8)
    assert one.in_flight == (4, 3, 2, 1) and not one.phased  # warm-up min(M, N - rank)
    gpipe = compute_order("gpipe", 4, 1, 8)
    assert gpipe.in_flight == (8, 8, 8, 8) and gpipe.phased
    assert compute_order("looped-bfs", 2, 2, 4).stages == ((0, 2), (1, 3))


def test_links_of_a_4090_box():
    links = links_of(make_scenario("qwen3-1.7b", "4090x8", TrainingSpec()))
    # Each GPU's own link limits a lone copy; with every GPU copying both ways the host's shared
    # resources (DRAM, the inter-socket link) give each far less.
    assert links.h2d_bytes_per_s < links.first_load_bytes_per_s <= links.link_h2d_bytes_per_s
    # 1 GB up to every GPU: half of the four far-socket GPUs' bytes cross the 40 GB/s inter-socket link.
    assert links.volume_s(1e9, 0) == pytest.approx(4 * 0.5e9 / 40e9)
    assert links.volume_s(2e9, 2e9) > links.volume_s(2e9, 0)
