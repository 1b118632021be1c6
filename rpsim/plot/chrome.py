"""Chrome / Perfetto trace (Trace Event Format) of any trace: a process per GPU plus one for the host, a
thread per lane, a complete event ('X') per traced action, and, when the plan is known, flow arrows
('s' -> 'f') for the dependencies that cross devices (dependency_graph; lane edges are implied by the
thread order and left out). Timestamps in microseconds, as the format requires."""
from __future__ import annotations

from typing import Any

from rpsim.ir import CPU, LANES, Plan, parse_action
from rpsim.ir.deps import dependency_graph
from rpsim.plot.view import n_gpus_of
from rpsim.sim.trace import Trace, TraceEvent

US = 1e6  # microseconds per second: ts and dur are in us


def chrome_trace(plan: Plan | None, trace: Trace) -> dict[str, Any]:
    n_gpus = n_gpus_of(trace, plan)

    def pid(gpu: int) -> int:  # the host's process comes after the GPUs'
        return n_gpus if gpu == CPU else gpu

    lanes = sorted({(e.gpu, e.lane) for e in trace.events},
                   key=lambda k: (pid(k[0]), LANES.index(k[1]) if k[1] in LANES else len(LANES), k[1]))
    tids = {k: i for i, k in enumerate(lanes)}
    events: list[dict[str, Any]] = metadata(lanes, tids, pid)
    for e in trace.events:
        events.append({"name": e.action, "cat": e.kind, "ph": "X", "ts": e.start_s * US,
                       "dur": (e.end_s - e.start_s) * US, "pid": pid(e.gpu), "tid": tids[(e.gpu, e.lane)],
                       "args": {"stage": e.stage, "mb": e.mb, "it": e.it, "bytes": e.bytes}})
    if plan is not None:
        events += flows(plan, trace, tids, pid)
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": dict(trace.meta)}


def metadata(lanes: list[tuple[int, str]], tids: dict, pid: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for gpu in sorted({g for g, _ in lanes}, key=pid):
        name = "host CPU" if gpu == CPU else f"GPU {gpu}"
        out.append({"name": "process_name", "ph": "M", "pid": pid(gpu), "tid": 0, "args": {"name": name}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": pid(gpu), "tid": 0,
                    "args": {"sort_index": pid(gpu)}})
    for gpu, lane in lanes:
        out.append({"name": "thread_name", "ph": "M", "pid": pid(gpu), "tid": tids[(gpu, lane)],
                    "args": {"name": lane}})
        out.append({"name": "thread_sort_index", "ph": "M", "pid": pid(gpu), "tid": tids[(gpu, lane)],
                    "args": {"sort_index": tids[(gpu, lane)]}})
    return out


def flows(plan: Plan, trace: Trace, tids: dict, pid: Any) -> list[dict[str, Any]]:
    """One s/f pair per cross-device edge whose both ends were traced. The start sits inside the source
    slice (at its end) and the finish binds to the enclosing destination slice ('bp': 'e') at its start,
    so both bind to the slices they belong to."""
    traced: dict[tuple[int, Any], TraceEvent] = {(e.gpu, parse_action(e.action)): e for e in trace.events}
    out: list[dict[str, Any]] = []
    graph = dependency_graph(plan)
    for n, (u, v, why) in enumerate(sorted(((u, v, d.get("why", "")) for u, v, d in graph.edges(data=True)
                                            if u[0] != v[0] and d.get("why") != "lane"), key=_edge_key)):
        src, dst = traced.get(u), traced.get(v)
        if src is None or dst is None:
            continue
        common = {"name": why, "cat": f"dep.{why}", "id": n}
        out.append({**common, "ph": "s", "ts": _inside(src), "pid": pid(src.gpu),
                    "tid": tids[(src.gpu, src.lane)]})
        out.append({**common, "ph": "f", "bp": "e", "ts": dst.start_s * US, "pid": pid(dst.gpu),
                    "tid": tids[(dst.gpu, dst.lane)]})
    return out


def _inside(e: TraceEvent) -> float:
    """A timestamp inside the slice near its end (the end itself may already belong to the next slice)."""
    return (e.start_s + 0.999 * (e.end_s - e.start_s)) * US


def _edge_key(edge: tuple) -> tuple:
    (gu, au), (gv, av), why = edge
    return (gu, str(au), gv, str(av), why)
