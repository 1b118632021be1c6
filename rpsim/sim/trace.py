"""Trace: timed events of one run, simulated or measured, in one schema (architecture.md, "Formats")."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rpsim.errors import PlanError
from rpsim.jsonfile import read_json

FORMAT = "rpsim.trace"
VERSION = 1


# init=False: the __init__ below stores the fields straight into the instance dict, as the generated frozen
# one does through one object.__setattr__ per field at twice the cost (the engine makes one per action).
@dataclass(frozen=True, init=False)
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

    def __init__(self, gpu: int, lane: str, action: str, kind: str, stage: int | None, mb: int | None, it: int,
                 start_s: float, end_s: float, bytes: float = 0.0) -> None:  # noqa: A002 (the schema's name)
        d = self.__dict__
        d["gpu"], d["lane"], d["action"], d["kind"], d["stage"], d["mb"], d["it"] = gpu, lane, action, kind, stage, mb, it
        d["start_s"], d["end_s"], d["bytes"] = start_s, end_s, bytes


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


_FIELDS = {f.name for f in fields(TraceEvent)}
_REQUIRED = _FIELDS - {"bytes"}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _event(e: Any, path: str) -> TraceEvent:
    """One event, every field type-checked: a string time ("start_s": "zero") or a reversed interval
    used to pass here and fail, or draw nonsense, far downstream."""
    if not isinstance(e, dict):
        raise PlanError(f"trace {path}: expected an event object, got {e!r}")
    unknown, missing = set(e) - _FIELDS, _REQUIRED - set(e)
    if unknown or missing:
        raise PlanError(f"trace {path}: {'unknown key ' + repr(min(unknown)) if unknown else 'missing key ' + repr(min(missing))}; "
                        f"keys: {', '.join(sorted(_FIELDS))}")
    checks = {"gpu": _is_int(e["gpu"]) and e["gpu"] >= -1, "lane": isinstance(e["lane"], str),
              "action": isinstance(e["action"], str), "kind": isinstance(e["kind"], str),
              "stage": e["stage"] is None or _is_int(e["stage"]), "mb": e["mb"] is None or _is_int(e["mb"]),
              "it": _is_int(e["it"]) and e["it"] >= 0, "start_s": _is_number(e["start_s"]),
              "end_s": _is_number(e["end_s"]), "bytes": _is_number(e.get("bytes", 0.0)) and e.get("bytes", 0.0) >= 0}
    for key, ok in checks.items():
        if not ok:
            raise PlanError(f"trace {path}.{key}: invalid value {e.get(key)!r}")
    if e["end_s"] < e["start_s"]:
        raise PlanError(f"trace {path}: end_s {e['end_s']} is before start_s {e['start_s']}")
    return TraceEvent(**e)


def trace_from_json(data: Any) -> Trace:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PlanError(f"trace $.format: expected {FORMAT!r}")
    events, meta = data.get("events", []), data.get("meta", {})
    if not isinstance(events, list) or not isinstance(meta, dict):
        raise PlanError("trace $: events must be a list and meta an object")
    if not events:
        raise PlanError("trace $.events: the trace has no events")
    return Trace(tuple(_event(e, f"$.events[{i}]") for i, e in enumerate(events)), dict(meta))


def load_trace(path: str | Path) -> Trace:
    return trace_from_json(read_json(path, "trace file", PlanError))
