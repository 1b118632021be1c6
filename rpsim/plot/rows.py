"""Which rows a Gantt chart has and where they sit: one row per (device, lane) with drawn events, grouped by
GPU, the host's lanes last; compute rows taller than transfer rows. Pure data, no matplotlib."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from rpsim.ir import CPU
from rpsim.plot.style import HIDDEN_KINDS, lane_order
from rpsim.sim.trace import Trace, TraceEvent

COMPUTE_HEIGHT = 1.0
TRANSFER_HEIGHT = 0.5
GROUP_GAP = 0.35


@dataclass(frozen=True)
class LaneRow:
    gpu: int  # CPU (-1) for the host
    lane: str
    events: tuple[TraceEvent, ...]  # the drawn events, by start time
    y: float  # top of the row (the y axis grows downwards)
    height: float

    @property
    def centre(self) -> float:
        return self.y + self.height / 2


def drawn_events(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    """The events a chart draws: every traced action but the instantaneous FREEs."""
    return [e for e in events if e.kind not in HIDDEN_KINDS]


def device_order(gpu: int) -> tuple[int, int]:
    return (1, 0) if gpu == CPU else (0, gpu)


def lane_rows(trace: Trace, lanes: tuple[str, ...] | None = None) -> list[LaneRow]:
    """Rows for every (device, lane) that has drawn events, restricted to `lanes` when given."""
    by_lane: dict[tuple[int, str], list[TraceEvent]] = defaultdict(list)
    for e in drawn_events(trace.events):
        if lanes is None or e.lane in lanes:
            by_lane[(e.gpu, e.lane)].append(e)
    rows, y, last_gpu = [], 0.0, None
    for gpu, lane in sorted(by_lane, key=lambda k: (device_order(k[0]), lane_order(k[1]), k[1])):
        if last_gpu is not None and gpu != last_gpu:
            y += GROUP_GAP
        h = COMPUTE_HEIGHT if lane == "compute" else TRANSFER_HEIGHT
        events = tuple(sorted(by_lane[(gpu, lane)], key=lambda e: (e.start_s, e.end_s)))
        rows.append(LaneRow(gpu, lane, events, y, h))
        y += h
        last_gpu = gpu
    return rows


def rows_extent(rows: list[LaneRow]) -> float:
    return max((r.y + r.height for r in rows), default=1.0)
