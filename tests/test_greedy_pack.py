"""rpsim.partition.greedy.pack: the greedy stage packing RoundPipe's partitioners share, in both directions.
Invariants: the cuts cover [lo, hi) with non-empty contiguous stages, each within budget and cap; each
stage is maximal on its open side; None exactly when one layer alone breaks budget or cap; walking up
is walking down on the reversed layers; and greedy packing needs the fewest stages any contiguous
packing needs (any part of a stage that fits fits too), from either end."""
from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.partition.greedy import MARGIN, contiguous_sums, pack, prefix_sums

costs_st = st.lists(st.integers(0, 20).map(float), min_size=1, max_size=25)


def _fits(cost, nbytes, a, b, budget, cap) -> bool:
    return sum(cost[a:b]) <= budget * (1 + MARGIN) and sum(nbytes[a:b]) <= cap * (1 + MARGIN)


def _fewest_stages(cost, nbytes, budget, cap) -> float:
    """The least number of contiguous stages within budget and cap, by dynamic programming."""
    n = len(cost)

    @functools.cache
    def best(i: int) -> float:
        if i == n:
            return 0
        return min((1 + best(j) for j in range(i + 1, n + 1) if _fits(cost, nbytes, i, j, budget, cap)),
                   default=float("inf"))
    return best(0)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), direction=st.sampled_from(("down", "up")))
def test_stages_cover_fit_and_are_maximal(data, direction):
    cost = data.draw(costs_st)
    nbytes = data.draw(st.lists(st.integers(0, 20).map(float), min_size=len(cost), max_size=len(cost)))
    budget, cap = data.draw(st.integers(1, 60).map(float)), data.draw(st.integers(1, 60).map(float))
    n = len(cost)
    cuts = pack(prefix_sums(cost), prefix_sums(nbytes), 0, n, budget, cap, direction)
    if any(not _fits(cost, nbytes, i, i + 1, budget, cap) for i in range(n)):
        assert cuts is None
        return
    assert cuts is not None and cuts[0] == 0 and cuts[-1] == n
    stages = list(itertools.pairwise(cuts))
    assert all(a < b and _fits(cost, nbytes, a, b, budget, cap) for a, b in stages)
    # Maximal on the side the walk goes: the next layer (above going up, below going down) did not fit.
    if direction == "up":
        assert all(not _fits(cost, nbytes, a, b + 1, budget, cap) for a, b in stages[:-1])
    else:
        assert all(not _fits(cost, nbytes, a - 1, b, budget, cap) for a, b in stages[1:])
    assert len(stages) == _fewest_stages(cost, nbytes, budget, cap)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_up_is_down_on_the_reversed_layers(data):
    cost = data.draw(costs_st)
    nbytes = data.draw(st.lists(st.integers(0, 20).map(float), min_size=len(cost), max_size=len(cost)))
    budget, cap = data.draw(st.integers(20, 60).map(float)), data.draw(st.integers(20, 60).map(float))
    n = len(cost)
    up = pack(prefix_sums(cost), prefix_sums(nbytes), 0, n, budget, cap, "up")
    down = pack(prefix_sums(cost[::-1]), prefix_sums(nbytes[::-1]), 0, n, budget, cap, "down")
    assert up == [n - c for c in reversed(down)]


def test_a_sub_range_is_packed_alone():
    """lo and hi bound the walk: layers outside [lo, hi) are never touched."""
    cost = [100.0, 1, 1, 1, 1, 1, 100]
    pre = prefix_sums(cost)
    assert pack(pre, prefix_sums([0.0] * 7), 1, 6, 2, 10, "up") == [1, 3, 5, 6]
    assert pack(pre, prefix_sums([0.0] * 7), 1, 6, 2, 10, "down") == [1, 2, 4, 6]


def test_a_budget_that_is_a_sum_admits_its_own_stage():
    """0.1 + 0.2 + 0.3 summed in another order is not the same float: the margin admits it."""
    cost = [0.3, 0.2, 0.1]
    budget = 0.1 + 0.2 + 0.3
    assert pack(prefix_sums(cost), prefix_sums([0.0] * 3), 0, 3, budget, 1.0, "up") == [0, 3]
    assert pack(prefix_sums(cost), prefix_sums([0.0] * 3), 0, 3, budget, 1.0, "down") == [0, 3]


def test_unknown_direction_is_refused():
    with pytest.raises(ValueError, match="direction 'sideways'"):
        pack([0.0, 1.0], [0.0, 1.0], 0, 1, 1.0, 1.0, "sideways")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 9).map(float), min_size=1, max_size=12), min_size=1, max_size=3),
       st.integers(0, 40), st.integers(0, 40))
def test_contiguous_sums_are_every_run_in_range(lists, lo, span):
    hi = float(lo + span)
    expected = sorted({sum(c[i:j]) for c in lists for i in range(len(c)) for j in range(i + 1, len(c) + 1)
                       if lo <= sum(c[i:j]) <= hi})
    assert contiguous_sums(lists, float(lo), hi) == expected
