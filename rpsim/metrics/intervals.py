"""Interval arithmetic on [start, end) lists: union, clipping, and total length."""
from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[float, float]


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[list[float]] = []
    for s, e in sorted(intervals):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def clip(intervals: Iterable[Interval], lo: float, hi: float) -> list[Interval]:
    # max(s, lo) and min(e, hi) spelled out (the builtins' exact results: the first argument unless the
    # second is strictly beyond it), as calls they were most of the metrics' time.
    out = []
    for s, e in intervals:
        a = lo if lo > s else s  # noqa: FURB136
        b = hi if hi < e else e  # noqa: FURB136
        if b > a:
            out.append((a, b))
    return out


def length(intervals: Iterable[Interval]) -> float:
    return sum(e - s for s, e in intervals)


def gaps(busy: list[Interval], lo: float, hi: float) -> list[Interval]:
    """Idle intervals of [lo, hi) not covered by the (merged) busy intervals."""
    out, t = [], lo
    for s, e in busy:
        if s > t:
            out.append((t, min(s, hi)))
        t = max(t, e)
    if t < hi:
        out.append((t, hi))
    return [(s, e) for s, e in out if e > s]


def overlap(a: list[Interval], b: list[Interval]) -> float:
    """Total length of the intersection of two merged interval lists."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if e > s:
            total += e - s
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total
