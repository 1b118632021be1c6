"""A transfer in flight on the `FlowNetwork` (rpsim.sim.network): its shares, each a flow of max-min
sharing with its own clock (the bytes it had left when its rate last changed, and when that was)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class LiveFlow:
    """One transfer: a share of `share_bytes` on each of `paths` (a host copy's per-socket shares), each
    share a flow of max-min sharing with its own clock; shares that finish first leave the lists."""

    flow_id: int
    paths: tuple[tuple[str, ...], ...]
    priority: int
    share_bytes: float
    done: Callable[[], None]  # called once, when the last byte of the last share has crossed
    done_within_bytes: float  # bytes left that count as done (float rounding of the projection)
    left_bytes: list[float]  # per share, at its since_s
    since_s: list[float]  # per share: when its rate last changed (or the flow started)
    finish: list[float]  # per share, projected: since_s + left_bytes / rate (inf while starved)
    done_from: list[float]  # per share: from then on, what the clock projects is within rounding of 0
    crossings: tuple[tuple[str, int], ...] = ()  # (resource, how many shares cross it), while all go on
    rates: tuple[float, ...] = ()  # per share, once rated
    finish_s: float = math.inf  # the earliest share's
    done_from_s: float = math.inf  # the earliest share's
    seq: int = -1  # start order


def left_at(flow: LiveFlow, share: int, now_s: float) -> float:
    """The bytes the clock of `flow`'s share projects as left at `now_s` (>= 0)."""
    elapsed_s = now_s - flow.since_s[share]
    left_bytes = flow.left_bytes[share]
    if elapsed_s > 0 and flow.rates:
        left_bytes -= flow.rates[share] * elapsed_s
    return max(left_bytes, 0.0)
