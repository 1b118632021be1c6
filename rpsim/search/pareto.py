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


def _within(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def frontier(items: Sequence[T], tokens_per_s: Callable[[T], float], gpu_bytes: Callable[[T], float],
             rtol: float = NOISE_RTOL) -> list[T]:
    """Items no other item beats on both axes by more than `rtol` (relative), sorted by memory ascending.
    A point that gains no more than rtol in tokens/s over the last kept point is dropped (it only costs
    memory); a kept point whose memory is within rtol of the next, faster point is replaced by it. With
    rtol = 0 this is the exact frontier; ties on both axes keep the first in `items`."""
    ordered = sorted(items, key=lambda x: (gpu_bytes(x), -tokens_per_s(x)))
    out: list[T] = []
    for x in ordered:
        if out and (tokens_per_s(x) <= tokens_per_s(out[-1]) or
                    _within(tokens_per_s(x), tokens_per_s(out[-1]), rtol)):
            continue
        while out and _within(gpu_bytes(x), gpu_bytes(out[-1]), rtol):
            out.pop()
        out.append(x)
    return out
