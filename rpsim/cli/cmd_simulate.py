"""`rpsim simulate`: one plan (from --plan, or built from flags) -> metrics, trace, Chrome trace."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rpsim.cli.cmd_compare import emit
from rpsim.cli.setup_flags import (
    add_plan_flags,
    add_setup_flags,
    check_plan_flags,
    plan_request,
    setup_from_args,
)
from rpsim.compare import Row, run_one
from rpsim.errors import SpecError
from rpsim.export.torch_csv import parse_torch_csv
from rpsim.ir.planio import load_plan
from rpsim.planner import FIXED_PARTITIONERS, PlanRequest, make_plan_from_order
from rpsim.report.files import write_json_atomic
from rpsim.scenario import Scenario, scenario_from_setup
from rpsim.sim.simulate import simulate


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="simulate one plan")
    p.add_argument("--plan", default=None, help="plan.json from rpsim export or rpsim search (default: none; build from flags)")
    add_setup_flags(p, need_model=False)
    add_plan_flags(p)
    p.add_argument("--schedule", default=None, help="schedule to build, with --model and --gpus instead of --plan (default: none)")
    p.add_argument("--trace", default=None, help="write the timed trace, rpsim.trace JSON with times in seconds (default: none)")
    p.add_argument("--chrome-trace", default=None, help="write a Chrome / Perfetto trace JSON (default: none)")
    p.add_argument("--format", default="table", choices=["table", "json", "csv"],
                   help="table for people, json or csv for scripts (default %(default)s)")
    p.add_argument("--torch-csv", default=None,
                   help="simulate a torch.distributed.pipelining compute-only schedule CSV (one row per rank; "
                        "torch's or hand-written) on --model / --gpus, instead of --schedule (default: none)")
    p.set_defaults(func=run, output_flags={"trace": "--trace", "chrome_trace": "--chrome-trace"})


def run(args: argparse.Namespace) -> int:
    if args.plan:
        plan = load_plan(args.plan)
        sc = scenario_from_setup(dict(plan.setup), n_gpus=plan.n_gpus)
        result = simulate(plan, sc)
        row = Row(result.metrics, result)
        args.fidelity = plan.level
    elif args.torch_csv:
        if not (args.model and args.gpus) or args.schedule:
            raise SpecError("rpsim simulate --torch-csv FILE needs --model and --gpus, and no --schedule")
        sc = setup_from_args(args)
        row = _run_torch_csv(sc, args)
    else:
        if not (args.model and args.gpus and args.schedule):
            raise SpecError("rpsim simulate needs --plan FILE, --torch-csv FILE, or --model, --gpus and --schedule")
        check_plan_flags(args, [args.schedule])
        sc = setup_from_args(args)
        row = run_one(sc, plan_request(args, args.schedule))
    wanted = [flag for flag, value in (("--trace", args.trace), ("--chrome-trace", args.chrome_trace)) if value]
    if wanted and not row.metrics["feasible"]:  # exit 1 is a failure, and a failure leaves no files
        print(f"rpsim: {' and '.join(wanted)} not written: the plan does not fit ({row.metrics['reason']})",
              file=sys.stderr)
    elif args.trace and row.result:
        write_json_atomic(args.trace, row.result.trace.to_json())
    if args.chrome_trace and row.result and row.metrics["feasible"]:
        from rpsim.plot.chrome import chrome_trace
        write_json_atomic(args.chrome_trace, chrome_trace(row.result.plan, row.result.trace))
    if args.format == "json":
        print(json.dumps([row.metrics], indent=1))
    else:
        emit([row], sc, args, ranked=False)
    return 0 if row.metrics["feasible"] else 1


def _run_torch_csv(sc: Scenario, args: argparse.Namespace) -> Row:
    try:
        text = Path(args.torch_csv).read_text()
    except OSError as e:
        raise SpecError(f"--torch-csv {args.torch_csv!r}: cannot read it ({e.strerror})") from None
    order = parse_torch_csv(text, f"--torch-csv {args.torch_csv}")
    req = PlanRequest("torch-csv", fidelity=args.fidelity,
                      partition=args.partition if args.partition and "|" not in args.partition else None,
                      partitioner=args.partitioner if args.partitioner in FIXED_PARTITIONERS else None,
                      weights=args.weights)
    result = simulate(make_plan_from_order(sc, req, order.per_gpu, order.overlapped), sc)
    return Row(result.metrics, result)
