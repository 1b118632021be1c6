"""`rpsim validate --plan p.json --measured t.json`: the simulator's prediction against a measured run."""
from __future__ import annotations

import argparse
import json

from rpsim.costs import load_profile
from rpsim.ir.planio import load_plan
from rpsim.report.table import format_table
from rpsim.scenario import scenario_from_setup
from rpsim.sim.trace import load_trace
from rpsim.sim.trace_match import check_trace_matches_plan
from rpsim.validate_run import validate


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="compare a plan's prediction with a measured trace (with the host STEP at "
                                  "its measured speed too, where the plan steps on the host)")
    p.add_argument("--plan", required=True, help="plan.json the measured run replayed (rpsim export / search)")
    p.add_argument("--measured", required=True, help="trace.json from rpexec run --trace")
    p.add_argument("--profile", default=None, help="profile.json to predict with, e.g. from rpexec profile (default: the plan's own)")
    p.add_argument("--format", default="table", choices=["table", "json"],
                   help="table for people, json for scripts (default %(default)s)")
    p.set_defaults(func=run)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def run(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan)
    setup = dict(plan.setup)
    if args.profile:
        load_profile(args.profile)  # fail early, with the profile's own error messages
        setup["profile"] = args.profile
    sc = scenario_from_setup(setup, n_gpus=plan.n_gpus)
    measured = load_trace(args.measured)
    check_trace_matches_plan(plan, measured, args.measured, args.plan)
    result = validate(plan, measured, sc)
    if args.format == "json":
        print(json.dumps({k: v for k, v in result.items() if k not in ("predicted", "measured")}, indent=1))
        return 0
    it, bub, mem = result["iteration_s"], result["bubble"], result["peak_gpu_mem_bytes"]
    given = result["iteration_s_at_measured_step_speed"]
    print(f"# {plan.schedule}: {sc.model.name} on {sc.server.name}, {plan.n_gpus} GPUs, {plan.n_mb} microbatches")
    print(format_table(["metric", "predicted", "measured", "error"], [
        ["iteration_s", round(it["predicted"], 4), round(it["measured"], 4), _pct(it["error"])],
        *([[f"iteration_s, host STEP x{given['step_factor']:.2f} (as measured)", round(given["predicted"], 4),
            round(given["measured"], 4), _pct(given["error"])]] if given else []),
        ["bubble", round(bub["predicted"], 4), round(bub["measured"], 4), "-"],
        ["peak_gpu_GiB", round(mem["predicted"] / 2**30, 2), round(mem["measured"] / 2**30, 2), "-"]]))
    print()
    print(format_table(["class", "n_pred", "n_meas", "pred_mean_ms", "meas_mean_ms", "error"],
                       [[r["class"], r["n_predicted"], r["n_measured"], round(r["predicted_mean_s"] * 1e3, 3),
                         round(r["measured_mean_s"] * 1e3, 3), _pct(r["error"])] for r in result["classes"]]))
    return 0
