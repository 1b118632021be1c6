"""The Pareto frontier: exact without tolerance, and with NOISE_RTOL, points equal to others within noise
are gone while every real trade-off stays; `search --top N` shows N plans."""
from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from rpsim.search.pareto import NOISE_RTOL, frontier

points = st.lists(st.tuples(st.floats(1.0, 100.0), st.floats(1.0, 100.0)), min_size=1, max_size=30)


def _front(pts, rtol):
    return frontier(pts, lambda p: p[0], lambda p: p[1], rtol)


@given(points)
def test_exact_frontier_is_the_set_of_undominated_points(pts):
    front = _front(pts, 0.0)
    for p in pts:
        dominated = any(q[0] >= p[0] and q[1] <= p[1] and (q[0] > p[0] or q[1] < p[1]) for q in pts)
        assert dominated != (p in front)


@given(points)
def test_noise_frontier_keeps_only_real_trade_offs(pts):
    front = _front(pts, NOISE_RTOL)
    assert front
    for a, b in itertools.pairwise(front):  # each step buys more than noise on both axes
        assert b[0] > a[0] * (1 + NOISE_RTOL) - 1e-12 or b[0] - a[0] > NOISE_RTOL * b[0]
        assert b[1] - a[1] > NOISE_RTOL * b[1]
    for p in pts:  # every point is matched, within noise (pareto's: of the larger of the two), by a frontier point
        assert any(q[0] >= p[0] - NOISE_RTOL * max(p[0], q[0]) and q[1] <= p[1] + NOISE_RTOL * max(p[1], q[1])
                   for q in front)


def test_a_chain_of_replacements_within_noise_does_not_drift():
    """Each point is within memory noise of the next, faster one, but the last is not within noise of the
    first: a greedy pass kept only the last and left the first unmatched (1.8% more memory)."""
    pts = [(10.0, 100.0), (9.0, 100.5), (11.0, 100.9), (12.0, 101.8)]
    assert _front(pts, NOISE_RTOL) == [(10.0, 100.0), (12.0, 101.8)]


def test_points_equal_within_noise_collapse():
    pts = [(100.0, 10.0), (100.5, 12.0), (150.0, 10.05), (200.0, 20.0)]
    assert _front(pts, 0.0) == [(100.0, 10.0), (150.0, 10.05), (200.0, 20.0)]
    assert _front(pts, NOISE_RTOL) == [(150.0, 10.05), (200.0, 20.0)]
    assert _front([(100.0, 10.0), (100.5, 12.0)], NOISE_RTOL) == [(100.0, 10.0)]


SMALL = ("--model", "qwen3-1.7b", "--gpus", "4090x4", "--global-batch", "8", "--seq", "1024", "--budget", "40",
         "--confirm", "1", "--jobs", "1")


def test_search_top_n_shows_n_plans(run_cli):
    """--top above --confirm: the simulator confirms --top plans, and json lists exactly those."""
    code, out, err = run_cli("search", *SMALL, "--top", "3", "--format", "json")
    assert code == 0, err
    plans = json.loads(out)["plans"]
    assert len(plans) == 3 and all(p["feasible"] for p in plans)
