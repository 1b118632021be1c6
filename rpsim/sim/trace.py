"""Trace: timed events of one run, simulated or measured, in one schema (architecture.md, "Formats")."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rpsim.errors import PlanError
from rpsim.jsonfile import read_json

FORMAT = "rpsim.trace"
VERSION = 1


@dataclass(frozen=True)
class TraceEvent:
    gpu: int  # -1: the host CPU
    lane: str
    action: str  # the action's text form
    kind: str
    stage: int | None
    mb: int | None
    it: int
    start_s: float
    end_s: float
    bytes: float = 0.0


@dataclass(frozen=True)
class Trace:
    events: tuple[TraceEvent, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def makespan_s(self) -> float:
        return max((e.end_s for e in self.events), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "meta": self.meta,
                "events": [asdict(e) for e in self.events]}


def trace_from_json(data: Any) -> Trace:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PlanError(f"trace $.format: expected {FORMAT!r}")
    events = []
    for i, e in enumerate(data.get("events", [])):
        try:
            events.append(TraceEvent(**e))
        except TypeError as err:
            raise PlanError(f"trace $.events[{i}]: {err}") from None
    return Trace(tuple(events), dict(data.get("meta", {})))


def load_trace(path: str | Path) -> Trace:
    return trace_from_json(read_json(path, "trace file", PlanError))
