"""Predicted against measured: simulate a plan, summarise a measured trace of the same plan with the
same metrics code, and compare iteration time, bubble, peak memory and per-action-class durations."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from statistics import mean
from typing import Any

from rpsim.host_step_speed import with_host_step_slower
from rpsim.ir import Plan
from rpsim.metrics import summarize
from rpsim.scenario import Scenario
from rpsim.sim.simulate import simulate
from rpsim.sim.trace import Trace

CLASSES = ("F", "B", "FB", "LOAD", "OFFLOAD", "ACT_IN", "ACT_OUT", "SEND", "STEP")


def iteration_ends_s(trace: Trace) -> dict[int, float]:
    ends: dict[int, float] = {}
    for e in trace.events:
        ends[e.it] = max(ends.get(e.it, 0.0), e.end_s)
    return ends


UNMARKED_WARMUP_ITERATIONS = 2  # a run that says nothing of its warm-up: its first two iterations are left out


def steady_call_s(call_times_s: list[float]) -> float:
    """Steady seconds per iteration of a system timed call by call (the `roundpipe` library in
    benchmarks/bench_rpexec.py), which warms nothing up before its first call: the mean after its first
    two calls, as for a trace without marks (all but the last call if there are fewer)."""
    tail = call_times_s[min(UNMARKED_WARMUP_ITERATIONS, len(call_times_s) - 1):]
    return mean(tail)


def steady_iteration_s(trace: Trace, skip: int | None = None) -> float:
    """Mean span between consecutive iterations' last events over the steady iterations. skip=None takes
    them from the trace's own marks (meta "steady_iterations", written by rpexec from what it warmed
    up), or leaves out the first two spans when the trace has none; skip=k leaves out the first 1 + k.
    A trace too short for that gives its last iteration's end."""
    ends = iteration_ends_s(trace)
    its = sorted(ends)
    marked = trace.meta.get("steady_iterations") if skip is None else None
    if marked is not None:
        steady = [i for i in its if i in set(marked) and i - 1 in ends]
    else:
        steady = its[1 + (UNMARKED_WARMUP_ITERATIONS - 1 if skip is None else skip):]
    spans = [ends[i] - ends[i - 1] for i in steady] or [ends[its[-1]]]
    return mean(spans)


def first_iteration_ratio(trace: Trace) -> float:
    """Iteration 0's time (from the start of the run) over the steady iteration time (issue 15: at most 2)."""
    ends = iteration_ends_s(trace)
    return ends[min(ends)] / steady_iteration_s(trace)


def class_durations(trace: Trace) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for e in trace.events:
        if e.kind in CLASSES:
            out[e.kind].append(e.end_s - e.start_s)
    return out


def measured_metrics(plan: Plan, trace: Trace, sc: Scenario) -> dict[str, Any]:
    n_iters = max((e.it for e in trace.events), default=0) + 1
    peaks = list(trace.meta.get("peak_gpu_mem_bytes") or [0.0] * plan.n_gpus)
    return summarize(replace(plan, n_iters=n_iters), trace, sc, peaks, float(trace.meta.get("peak_host_mem_bytes", 0.0)))


def relative_error(predicted: float, measured: float) -> float | None:
    return (predicted - measured) / measured if measured else None


def mean_host_step_s(trace: Trace) -> float | None:
    """The mean host optimizer STEP of `trace` (the host's lanes are GPU -1; a GPU's own STEPs are not),
    over the iterations after the first where there are more (the first pays first-touch costs)."""
    steps = [e for e in trace.events if e.kind == "STEP" and e.gpu < 0]
    later = [e for e in steps if e.it > 0]
    steps = later or steps
    return mean(e.end_s - e.start_s for e in steps) if steps else None


def validate(plan: Plan, measured: Trace, sc: Scenario) -> dict[str, Any]:
    """The prediction against a measured run: iteration, bubble, peak memory, each action class; and where
    the plan steps on the host, the iteration predicted again with the STEP as fast as the run measured it
    (rpsim.host_step_speed), which says how much of the error is the host STEP's speed."""
    pred = simulate(plan, sc, stop_at_steady=False)  # the measured trace ran every iteration
    p, m = pred.metrics, measured_metrics(plan, measured, sc)
    given_step = None
    predicted_step_s, measured_step_s = mean_host_step_s(pred.trace), mean_host_step_s(measured)
    if predicted_step_s and measured_step_s:
        factor = measured_step_s / predicted_step_s  # the same plan: the same STEPs per iteration
        again = simulate(plan, with_host_step_slower(sc, factor), stop_at_steady=False).metrics["iteration_s"]
        given_step = {"step_factor": factor, "predicted": again, "measured": m["iteration_s"],
                      "error": relative_error(again, m["iteration_s"])}
    rows = []
    pd, md = class_durations(pred.trace), class_durations(measured)
    for kind in CLASSES:
        if kind in pd or kind in md:
            ps, ms = mean(pd[kind]) if pd[kind] else 0.0, mean(md[kind]) if md[kind] else 0.0
            rows.append({"class": kind, "n_predicted": len(pd[kind]), "n_measured": len(md[kind]),
                         "predicted_mean_s": ps, "measured_mean_s": ms, "error": relative_error(ps, ms)})
    return {
        "iteration_s": {"predicted": p["iteration_s"], "measured": m["iteration_s"],
                        "error": relative_error(p["iteration_s"], m["iteration_s"])},
        "bubble": {"predicted": p["bubble"], "measured": m["bubble"]},
        # A measured trace's peak is torch.cuda.max_memory_allocated: compared with the predicted live
        # tensor bytes, without the allocator overhead that feasibility adds.
        "peak_gpu_mem_bytes": {"predicted": max(p["peak_gpu_allocated_bytes"]),
                               "measured": max(m["peak_gpu_mem_bytes"])},
        "classes": rows, "predicted": p, "measured": m,
        "iteration_s_at_measured_step_speed": given_step,
    }
