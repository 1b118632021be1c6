"""Greedy stage packing under a stage-time budget and a byte cap, and the candidate budgets it is tried
with: the two pieces RoundPipe's partitioners share (the paper's, rpsim.partition.roundpipe_auto, and the
`roundpipe` library's, rpsim.partition.library_auto).

A greedy pass walks the layers in one direction and opens a new stage whenever the next layer would push
the current one past the budget or the cap. With prefix sums this is a binary search per stage: the
stage starting at a boundary ends at the farthest layer whose cumulative time and bytes stay within
budget and cap. Sums are compared with a relative margin of 1e-12 so that a budget that is itself a
contiguous sum (every candidate is one) admits the stage it was summed from, whatever the order of
additions.
"""
from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Sequence

MARGIN = 1e-12
DIRECTIONS = ("down", "up")  # from the last layer towards the first, or from the first up


def prefix_sums(values: Iterable[float]) -> list[float]:
    """[0, v0, v0 + v1, ...], added sequentially."""
    return [0.0, *itertools.accumulate(float(v) for v in values)]


def pack(cost_prefix: Sequence[float], bytes_prefix: Sequence[float], lo: int, hi: int, budget: float,
         cap_bytes: float, direction: str) -> list[int] | None:
    """Cut points [lo, ..., hi] of the greedy packing of layers [lo, hi) walked in `direction`: every stage
    as long as the budget and the cap allow. None when a single layer exceeds either."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: valid choices: {', '.join(DIRECTIONS)}")
    t, cap = budget * (1 + MARGIN), cap_bytes * (1 + MARGIN)
    if direction == "down":
        cuts = [hi]
        while hi > lo:
            start = max(bisect.bisect_left(cost_prefix, cost_prefix[hi] - t, lo, hi),
                        bisect.bisect_left(bytes_prefix, bytes_prefix[hi] - cap, lo, hi))
            if start >= hi:
                return None
            cuts.append(start)
            hi = start
        return cuts[::-1]
    cuts = [lo]
    while lo < hi:
        end = min(bisect.bisect_right(cost_prefix, cost_prefix[lo] + t, lo, hi + 1),
                  bisect.bisect_right(bytes_prefix, bytes_prefix[lo] + cap, lo, hi + 1)) - 1
        if end <= lo:
            return None
        cuts.append(end)
        lo = end
    return cuts


def ranges(cuts: Sequence[int]) -> tuple[tuple[int, int], ...]:
    return tuple(itertools.pairwise(cuts))


def contiguous_sums(costs: Iterable[Sequence[float]], lo: float, hi: float = float("inf")) -> list[float]:
    """The distinct sums of contiguous runs of each cost list, as prefix differences of its sequential
    prefix sums (the floats numpy's cumsum gives), within [lo, hi] up to the margin, sorted."""
    sums: set[float] = set()
    for cost in costs:
        prefix = prefix_sums(cost)
        for i, start in enumerate(prefix):
            sums.update(end - start for end in prefix[i + 1:])
    low, high = lo * (1 - MARGIN), hi * (1 + MARGIN)
    return sorted(c for c in sums if low <= c <= high)
