"""Simulate several schedules on one scenario and rank them: best feasible first. Infeasible plans are
rows with their reason, never errors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rpsim.errors import Infeasible
from rpsim.planner import PlanRequest
from rpsim.scenario import Scenario
from rpsim.schedules import SCHEDULES
from rpsim.sim.simulate import SimResult
from rpsim.steady_run import simulate_request


@dataclass(frozen=True)
class Row:
    metrics: dict[str, Any]
    result: SimResult | None  # None when no plan could be built


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
