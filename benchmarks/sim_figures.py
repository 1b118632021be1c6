"""Every simulated figure of a spread of cases, dumped for a before/after check of an engine change that
may move results at float-rounding level only (benchmarks/notes-sim.md, "Session 7").

Cases: every schedule on llama-70b 4090x8 and on qwen3-1.7b 4090x4 (ideal, hop, pcie), the 235B RoundPipe
plan of bench_sim.py, the e03 plans measured on h200x2 (simulated as e03 does, every iteration), and
llama-70b on h100x8 and qwen3-8b on h100x16 (many-socket servers). Per case it keeps every numeric leaf
of the metrics and every action's (start, end).

    PYTHONPATH=<old tree> python3 benchmarks/sim_figures.py --dump old.json
    PYTHONPATH=<new tree> python3 benchmarks/sim_figures.py --dump new.json
    python3 benchmarks/sim_figures.py --compare old.json new.json   # worst relative differences

Metrics compare relative to their own magnitude; action times relative to the run's makespan (a time near
zero has no meaningful relative error of its own). Prints figures, asserts nothing; exit 1 when a
difference exceeds --tolerance (default 1e-9) or a figure is missing on one side.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTITION_235B = ",".join(["2"] * 47) + "|" + ",".join(["0"] + ["1"] * 94)


def cases():  # type: ignore[no-untyped-def]
    """(label, plan, scenario, stop_at_steady) of every case."""
    from rpsim.ir.planio import load_plan
    from rpsim.planner import PlanRequest, make_plan
    from rpsim.scenario import make_scenario, scenario_from_setup
    from rpsim.schedules import SCHEDULES
    from rpsim.specs import TrainingSpec
    sc = make_scenario("llama-70b", "4090x8", TrainingSpec(seq_len=2048, global_batch=64, mb_size=4))
    for schedule in sorted(SCHEDULES):
        yield f"llama-70b 4090x8 {schedule}", _plan_or_none(make_plan, sc, PlanRequest(schedule)), sc, True
    small = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(seq_len=2048, global_batch=32, mb_size=4))
    for fidelity in ("ideal", "hop", "pcie"):
        for schedule in sorted(SCHEDULES):
            yield (f"qwen3-1.7b 4090x4 {fidelity} {schedule}",
                   _plan_or_none(make_plan, small, PlanRequest(schedule, fidelity=fidelity)), small, True)
    big = make_scenario("qwen3-235b-a22b", "4090x8", TrainingSpec(seq_len=2048, global_batch=64, mb_size=4))
    yield "qwen3-235b 4090x8 roundpipe", make_plan(big, PlanRequest("roundpipe", partition=PARTITION_235B)), big, True
    sys.path.insert(0, str(ROOT))
    from experiments.e03_sim_vs_real import DATA, prediction_setup
    for plan_path in sorted(DATA.glob("*-2gpu-plan.json")):
        plan = load_plan(plan_path)
        yield f"e03 {plan_path.name}", plan, scenario_from_setup(prediction_setup(plan.setup, 2, "profile")), False
    h8 = make_scenario("llama-70b", "h100x8", TrainingSpec(seq_len=2048, global_batch=64, mb_size=4))
    for schedule in ("roundpipe", "roundpipe-sync", "1f1b"):
        yield f"llama-70b h100x8 {schedule}", make_plan(h8, PlanRequest(schedule)), h8, True
    h16 = make_scenario("qwen3-8b", "h100x16", TrainingSpec(seq_len=2048, global_batch=16, mb_size=4))
    yield "qwen3-8b h100x16 roundpipe", make_plan(h16, PlanRequest("roundpipe")), h16, True


def _plan_or_none(make_plan, sc, request):  # type: ignore[no-untyped-def]
    from rpsim.errors import PlanError, SpecError
    try:
        return make_plan(sc, request)
    except (PlanError, SpecError):
        return None  # infeasible on this server: no figures either side


def figures(plan, sc, stop_at_steady: bool) -> dict:  # type: ignore[no-untyped-def]
    from rpsim.sim.simulate import simulate
    result = simulate(plan, sc, stop_at_steady=stop_at_steady)
    return {"metrics": _leaves(result.metrics),
            "times": {f"{e.gpu}|{e.lane}|{e.action}": [e.start_s, e.end_s] for e in result.trace.events},
            "makespan_s": result.trace.makespan_s}


def _leaves(value, prefix: str = "") -> dict[str, float]:  # type: ignore[no-untyped-def]
    if isinstance(value, bool):
        return {prefix: float(value)}
    if isinstance(value, (int, float)):
        return {prefix: float(value)}
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _leaves(item, f"{prefix}.{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, f"{prefix}[{i}]").items()}
    return {}


def dump(path: str) -> None:
    rows = {}
    for label, plan, sc, stop in cases():
        rows[label] = None if plan is None else figures(plan, sc, stop)
        print(label, flush=True)
    Path(path).write_text(json.dumps(rows) + "\n", encoding="utf-8")


def compare(old_path: str, new_path: str, tolerance: float) -> int:
    old, new = (json.loads(Path(p).read_text(encoding="utf-8")) for p in (old_path, new_path))
    worst_metric, worst_time, problems = (0.0, ""), (0.0, ""), []
    for label in sorted(set(old) | set(new)):
        a, b = old.get(label), new.get(label)
        if (a is None) != (b is None):
            problems.append(f"{label}: present on one side only")
            continue
        if a is None:
            continue
        if a["metrics"].keys() != b["metrics"].keys() or a["times"].keys() != b["times"].keys():
            problems.append(f"{label}: different figures or actions")
            continue
        for key, x in a["metrics"].items():
            y = b["metrics"][key]
            rel = 0.0 if x == y else abs(x - y) / max(abs(x), abs(y))
            worst_metric = max(worst_metric, (rel, f"{label} {key}: {x!r} vs {y!r}"))
        span = max(a["makespan_s"], 1e-300)
        for key, (s0, e0) in a["times"].items():
            s1, e1 = b["times"][key]
            rel = max(abs(s0 - s1), abs(e0 - e1)) / span
            worst_time = max(worst_time, (rel, f"{label} {key}: {s0!r},{e0!r} vs {s1!r},{e1!r}"))
    def where(worst: tuple[float, str]) -> str:
        return worst[1] if worst[0] else "all identical"

    print(f"cases: {len(old)}; worst relative metric difference {worst_metric[0]:.3g} ({where(worst_metric)})")
    print(f"worst action-time difference / makespan {worst_time[0]:.3g} ({where(worst_time)})")
    for problem in problems:
        print(problem)
    return 1 if problems or worst_metric[0] > tolerance or worst_time[0] > tolerance else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump", default=None, help="write every case's figures to this JSON file")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("OLD", "NEW"), help="compare two dumps")
    parser.add_argument("--tolerance", type=float, default=1e-9)
    args = parser.parse_args()
    if args.dump:
        dump(args.dump)
    if args.compare:
        sys.exit(compare(*args.compare, args.tolerance))


if __name__ == "__main__":
    main()
