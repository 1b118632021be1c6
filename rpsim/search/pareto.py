"""Pareto frontier of throughput against peak GPU memory, with points that differ only by noise merged."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

# Two plans whose tokens/s (or peak GPU memory) differ by at most 1% of the larger are equal for the
# frontier: that is below what a steady-state window of a few simulated iterations resolves, and far
# below the run-to-run spread of real runs (README, e03: up to 30% between identical async runs), so a
# frontier step that buys under 1% more tokens/s with more memory is not a real trade-off.
NOISE_RTOL = 0.01
# Above this many points on the exact frontier the chain search (cubic in them) gives way to one greedy
# pass; search's frontiers hold tens.
CHAIN_SEARCH_MAX_POINTS = 200


def _within(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def frontier(items: Sequence[T], tokens_per_s: Callable[[T], float], gpu_bytes: Callable[[T], float],
             rtol: float = NOISE_RTOL) -> list[T]:
    """Items no other item beats on both axes by more than `rtol` (relative to the larger of the two),
    sorted by memory ascending: of the exact frontier, the most points such that each step to the next
    buys more than rtol of tokens/s for more than rtol of memory, and every item is matched within rtol
    on both axes by one of them (noise_free_chain). With rtol = 0 this is the exact frontier; ties on
    both axes keep the first in `items`."""
    exact: list[T] = []
    for x in sorted(items, key=lambda x: (gpu_bytes(x), -tokens_per_s(x))):
        if not exact or tokens_per_s(x) > tokens_per_s(exact[-1]):
            exact.append(x)
    if rtol <= 0 or len(exact) < 2:
        return exact
    t = [tokens_per_s(x) for x in exact]
    m = [gpu_bytes(x) for x in exact]
    chain = noise_free_chain(t, m, rtol) if len(exact) <= CHAIN_SEARCH_MAX_POINTS else None
    return [exact[i] for i in chain] if chain is not None else _greedy(exact, t, m, rtol)


def noise_free_chain(t: Sequence[float], m: Sequence[float], rtol: float) -> list[int] | None:
    """Indices into an exact frontier (tokens/s `t` and memory `m`, both strictly rising) of the longest
    chain (ties: the later points, the faster ones) whose consecutive points differ by more than rtol on
    both axes and that matches every frontier point within rtol: a point between two chain points by the
    one before it on tokens/s or the one after it on memory (a chain point further away matches less),
    a point before the first by the first on memory, after the last by the last on tokens/s. Every item
    off the frontier is then matched too (a frontier point beats it exactly). None where no chain exists.
    Dynamic programming over chain ends (a greedy pass drifts: replacing a point by a faster one within
    memory noise, again and again, left the first point unmatched)."""
    n = len(t)

    def left_matches(i: int, p: int) -> bool:  # chain point i < p matches p on tokens/s
        return _within(t[i], t[p], rtol)

    def right_matches(j: int, p: int) -> bool:  # chain point j > p matches p on memory
        return _within(m[j], m[p], rtol)

    best: list[tuple[int, int] | None] = [None] * n  # per chain end: (length, sum of indices)
    before: list[int] = [-1] * n
    for j in range(n):
        if all(right_matches(j, p) for p in range(j)):
            best[j] = (1, j)
        for i in range(j):
            if best[i] is None or _within(t[i], t[j], rtol) or _within(m[i], m[j], rtol):
                continue
            if all(left_matches(i, p) or right_matches(j, p) for p in range(i + 1, j)):
                length, weight = best[i]  # type: ignore[misc]
                if best[j] is None or (length + 1, weight + j) > best[j]:  # type: ignore[operator]
                    best[j], before[j] = (length + 1, weight + j), i
    ends = [j for j in range(n) if best[j] is not None and all(left_matches(j, p) for p in range(j + 1, n))]
    if not ends:
        return None
    j = max(ends, key=lambda k: best[k])  # type: ignore[arg-type, return-value]
    chain = [j]
    while before[chain[-1]] >= 0 and best[chain[-1]][0] > 1:  # type: ignore[index]
        chain.append(before[chain[-1]])
    return chain[::-1]


def _greedy(exact: list[T], t: list[float], m: list[float], rtol: float) -> list[T]:
    """One pass for frontiers too long to search: a point that gains no more than rtol in tokens/s over the
    last kept point is dropped; a kept point whose memory is within rtol of the next, faster point is
    replaced by it (it can drift: see noise_free_chain)."""
    out: list[int] = []
    for k in range(len(exact)):
        if out and _within(t[k], t[out[-1]], rtol):
            continue
        while out and _within(m[k], m[out[-1]], rtol):
            out.pop()
        out.append(k)
    return [exact[k] for k in out]
