"""What a chart says about a trace besides its bars: the analysis window, per-GPU bubble, iteration ends
and the iteration time. The same numbers `rpsim compare` reports when the plan or its metrics are known
(async RoundPipe: the steady-state window); for a bare trace, the whole trace as one flushed window."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from rpsim.ir import Plan
from rpsim.metrics.bubbles import bubble_breakdown
from rpsim.metrics.summary import iteration_window
from rpsim.sim.trace import Trace


@dataclass(frozen=True)
class TraceView:
    lo_s: float
    hi_s: float
    steady: bool
    iteration_s: float
    bubble: float  # over all GPUs, as in the metrics
    gpu_bubble: tuple[float, ...]  # idle fraction of the window, per GPU
    iteration_ends_s: tuple[float, ...]  # the last compute end of each iteration, in order


def n_gpus_of(trace: Trace, plan: Plan | None = None) -> int:
    if plan is not None:
        return plan.n_gpus
    meta = trace.meta.get("n_gpus")
    return int(meta) if isinstance(meta, int) else max((e.gpu for e in trace.events), default=-1) + 1


def iteration_ends(trace: Trace) -> tuple[float, ...]:
    """Where each iteration ends. Flushed schedules: its last event, the optimizer step included. When
    iterations overlap (async RoundPipe: the step of i runs under the compute of i+1), its last compute,
    the instant the steady-state iteration time is measured between (metrics.summary.iteration_window)."""
    compute: dict[int, float] = {}
    last: dict[int, float] = {}
    first_compute: dict[int, float] = {}
    for e in trace.events:
        last[e.it] = max(last.get(e.it, 0.0), e.end_s)
        if e.lane == "compute" and e.gpu >= 0:
            compute[e.it] = max(compute.get(e.it, 0.0), e.end_s)
            first_compute[e.it] = min(first_compute.get(e.it, e.start_s), e.start_s)
    its = sorted(compute)
    overlap = any(last[i] > first_compute[j] for i, j in itertools.pairwise(its))
    return tuple((compute if overlap else last)[i] for i in its)


def trace_view(trace: Trace, plan: Plan | None = None, metrics: dict[str, Any] | None = None) -> TraceView:
    ends = iteration_ends(trace)
    if metrics is not None and metrics.get("window_s"):
        (lo, hi), iteration_s = metrics["window_s"], metrics["iteration_s"]
        steady = bool(metrics["steady_state"])
    elif plan is not None:
        iteration_s, lo, hi, steady = iteration_window(plan, trace)
    else:
        lo, hi, steady = 0.0, trace.makespan_s, False
        iteration_s = hi / max(1, len(ends))
    n = n_gpus_of(trace, plan)
    b = bubble_breakdown(trace, n, lo, hi, steady)
    window = hi - lo
    per_gpu = tuple(1.0 - busy / window if window > 0 else 0.0 for busy in b.busy_s)
    return TraceView(lo, hi, steady, iteration_s, b.bubble, per_gpu, ends)
