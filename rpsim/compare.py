"""Simulate several schedules on one scenario and rank them: best feasible first. Infeasible plans are
rows with their reason, never errors. Several schedules are simulated on a pool of local processes
(`compare_rows`), one per core by default."""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rpsim.errors import Infeasible, SpecError
from rpsim.planner import PlanRequest
from rpsim.scenario import Scenario
from rpsim.schedules import SCHEDULES
from rpsim.sim.simulate import SimResult
from rpsim.steady_run import simulate_request


@dataclass(frozen=True)
class Row:
    metrics: dict[str, Any]
    result: SimResult | None  # None when no plan could be built, or when the caller kept metrics only


def infeasible_row(schedule: str, sc: Scenario, reason: str) -> dict[str, Any]:
    return {"schedule": schedule, "feasible": False, "reason": reason, "iteration_s": None, "tokens_per_s": None,
            "mfu": None, "bubble": None, "bubble_fill": None, "bubble_drain": None, "bubble_switch": None,
            "bubble_intra": None, "peak_gpu_mem_bytes": None, "peak_host_mem_bytes": None,
            "n_mb": sc.training.n_mb, "mb_size": sc.training.mb_size}


def run_one(sc: Scenario, req: PlanRequest) -> Row:
    try:
        result = simulate_request(sc, req)
    except Infeasible as e:
        return Row(infeasible_row(req.schedule, sc, str(e)), None)
    return Row(result.metrics, result)


def compare_row(sc: Scenario, req: PlanRequest, keep_result: bool = True, alone: bool = False) -> Row:
    """run_one, where a schedule whose structure does not fit the model or setup (ZB-V on 8 GPUs needs
    16 stages; DualPipeV needs M >= 2N) is a row that was not built, as the comparison figure lists them,
    not an abort -- unless it is the only schedule asked for (`alone`). `keep_result`: the row keeps the
    simulation (its trace, for a figure); without it a worker sends the metrics alone back."""
    try:
        row = run_one(sc, req)
    except SpecError as e:
        if alone:
            raise
        return Row(infeasible_row(req.schedule, sc, f"not built: {e}"), None)
    return row if keep_result else Row(row.metrics, None)


def compare_rows(sc: Scenario, requests: Sequence[PlanRequest], jobs: int | None, keep_results: bool) -> list[Row]:
    """compare_row of each request, in the requests' order, on min(jobs, requests) worker processes
    (jobs None: one per core; 1: here, one after another). Ctrl-C or SIGTERM stops the workers at once
    (rpsim.process_pool). Rows that keep their simulations (`keep_results`, for a figure) are made here:
    sending a RoundPipe result back from a worker (its plan, trace and memory timeline: 6 MB on
    Llama-70B, 4090x8) took 0.7 s of pickling, a third of the run."""
    n = 1 if keep_results else min(jobs or os.cpu_count() or 1, len(requests))
    alone = len(requests) == 1
    if n <= 1:
        rows = []
        for req in requests:
            print(f"rpsim: simulating {req.schedule} ...", file=sys.stderr)
            rows.append(compare_row(sc, req, keep_results, alone))
        return rows
    return _on_pool(sc, requests, n)


def _on_pool(sc: Scenario, requests: Sequence[PlanRequest], n_workers: int) -> list[Row]:
    from concurrent.futures import ProcessPoolExecutor

    from rpsim.process_pool import quiet_worker_signals, sigterm_raises_terminated, stop_pool
    # Async schedules first: they simulate several iterations, the others one, so the longest runs start
    # while the short ones fill the other workers.
    order = sorted(range(len(requests)), key=lambda i: SCHEDULES[requests[i].schedule].TRAITS.optimizer != "async")
    with sigterm_raises_terminated():
        pool = ProcessPoolExecutor(max_workers=n_workers, initializer=quiet_worker_signals)
        try:
            for req in requests:
                print(f"rpsim: simulating {req.schedule} ...", file=sys.stderr)
            futures = {i: pool.submit(compare_row, sc, requests[i], False) for i in order}
            rows = [futures[i].result() for i in range(len(requests))]
        except BaseException:
            stop_pool(pool)
            raise
        pool.shutdown()
    return rows


def rank(rows: list[Row]) -> list[Row]:
    def key(r: Row) -> tuple:
        m = r.metrics
        return (not m["feasible"], -(m["tokens_per_s"] or 0.0), m["schedule"])
    return sorted(rows, key=key)


def speedup_over_baselines(rows: list[Row]) -> tuple[str, str, float] | None:
    """(best schedule, best fixed-placement baseline, ratio of tokens/s), both feasible."""
    feasible = [r.metrics for r in rows if r.metrics["feasible"]]
    baselines = [m for m in feasible if is_baseline(m["schedule"])]
    if not feasible or not baselines:
        return None
    best = max(feasible, key=lambda m: m["tokens_per_s"])
    base = max(baselines, key=lambda m: m["tokens_per_s"])
    return best["schedule"], base["schedule"], best["tokens_per_s"] / base["tokens_per_s"]


def is_baseline(schedule: str) -> bool:
    """A known fixed-placement schedule. A loaded plan's schedule name is informational once its lanes
    exist (`rpsim simulate --plan` runs any valid plan), so an unknown name is simply not a baseline."""
    module = SCHEDULES.get(schedule)
    return module is not None and module.TRAITS.placement.fixed
