"""Bubble accounting (architecture.md): idle compute time / (window x GPUs), split into fill (before a
GPU's first action), drain (after its last), switch (the gap between a GPU's last warm-up forward and
its first backward of the iteration) and intra (the rest). Also Megatron's
convention: idle / busy (Narayanan et al. 2021, Sec. 2.2). For an async steady-state window, fill and
drain are zero: neighbouring iterations fill them."""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from rpsim.ir.action import BACKWARD_KINDS
from rpsim.metrics.intervals import clip, gaps, length, merge
from rpsim.sim.trace import Trace, TraceEvent

BACKWARD = BACKWARD_KINDS


@dataclass(frozen=True)
class BubbleBreakdown:
    bubble: float
    fill: float
    drain: float
    switch: float
    intra: float
    megatron: float  # idle / busy compute time
    busy_s: tuple[float, ...]  # per GPU, inside the window


def bubble_breakdown(trace: Trace, n_gpus: int, lo: float, hi: float, steady: bool,
                     computing: list[list[TraceEvent]] | None = None) -> BubbleBreakdown:
    """`computing`: events_by_gpu(trace, n_gpus, ("compute",)), when the caller has it."""
    window = hi - lo
    parts = {"fill": 0.0, "drain": 0.0, "switch": 0.0, "intra": 0.0}
    busy_per_gpu = []
    if computing is None:
        computing = events_by_gpu(trace, n_gpus, ("compute",))
    for gpu in range(n_gpus):
        events = sorted((e for e in computing[gpu] if e.end_s > e.start_s), key=lambda e: e.start_s)
        busy = merge(clip([(e.start_s, e.end_s) for e in events], lo, hi))
        busy_per_gpu.append(length(busy))
        starts, ends = [x.start_s for x in events], [x.end_s for x in events]
        turns = _first_backwards(events)
        for s, e in gaps(busy, lo, hi):
            parts[_classify(events, starts, ends, turns, (s, e), (lo, hi), busy, steady)] += e - s
    denom = window * n_gpus if window > 0 else 1.0
    idle = sum(parts.values())
    total_busy = sum(busy_per_gpu)
    return BubbleBreakdown(idle / denom, parts["fill"] / denom, parts["drain"] / denom, parts["switch"] / denom,
                           parts["intra"] / denom, idle / total_busy if total_busy else 0.0, tuple(busy_per_gpu))


def events_by_gpu(trace: Trace, n_gpus: int, lanes: tuple[str, ...]) -> list[list[TraceEvent]]:
    """Each GPU's events on `lanes`, in trace order (one pass, not one per GPU)."""
    out: list[list[TraceEvent]] = [[] for _ in range(n_gpus)]
    for e in trace.events:
        if e.lane in lanes and 0 <= e.gpu < n_gpus:
            out[e.gpu].append(e)
    return out


def _first_backwards(events: list[TraceEvent]) -> set[int]:
    """Indices of each iteration's first backward on one GPU's (start-ordered) compute lane."""
    seen: set[int] = set()
    out = set()
    for j, e in enumerate(events):
        if e.kind in BACKWARD and e.it not in seen:
            seen.add(e.it)
            out.add(j)
    return out


def _classify(events: list, starts: list[float], ends: list[float], turns: set[int], gap: tuple[float, float],
              window: tuple[float, float], busy: list, steady: bool) -> str:
    (s, e), (lo, hi) = gap, window
    if not steady and (not busy or e <= busy[0][0]) and s <= lo:
        return "fill"
    if not steady and (not busy or s >= busy[-1][1]) and e >= hi:
        return "drain"
    # A compute lane runs one action at a time, so its events are ordered by both start and end.
    i = bisect.bisect_right(ends, s + 1e-12)
    j = bisect.bisect_left(starts, e - 1e-12)
    # Only the turn into an iteration's first backward: a steady-state forward -> backward gap (1F1B waiting
    # for a gradient) is intra, as architecture.md defines switch; counting every F -> B gap moved 1F1B's
    # steady-state waits into switch.
    if 0 < i and j in turns and events[i - 1].kind == "F":
        return "switch"
    return "intra"
