"""Pareto frontier of throughput against peak GPU memory."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def frontier(items: Sequence[T], tokens_per_s: Callable[[T], float], gpu_bytes: Callable[[T], float]
             ) -> list[T]:
    """Items no other item beats on both axes (more tokens/s and no more memory, or less memory and no
    fewer tokens/s), sorted by memory ascending. Ties on both axes keep the first in `items`."""
    ordered = sorted(items, key=lambda x: (gpu_bytes(x), -tokens_per_s(x)))
    out: list[T] = []
    best = float("-inf")
    for x in ordered:
        if tokens_per_s(x) > best:
            out.append(x)
            best = tokens_per_s(x)
    return out
