"""`rpsim export`: write a plan.json (and optionally torch's compute-only CSV)."""
from __future__ import annotations

import argparse
import sys

from rpsim.cli.setup_flags import add_plan_flags, add_setup_flags, plan_request, setup_from_args
from rpsim.errors import SpecError
from rpsim.export.torch_csv import to_torch_csv
from rpsim.ir.grid import format_lanes
from rpsim.ir.planio import plan_to_json
from rpsim.planner import make_plan
from rpsim.report.files import write_json_atomic, write_text_atomic
from rpsim.schedules import SCHEDULES, get_schedule


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="write a plan for rpexec")
    add_setup_flags(p)
    add_plan_flags(p)
    p.add_argument("--schedule", required=True)
    p.add_argument("-o", "--output", required=True, help="plan.json to write")
    p.add_argument("--torch-csv", default=None, help="also write torch's compute-only CSV (fixed placement)")
    p.add_argument("--show", action="store_true", help="print the lanes")
    p.set_defaults(func=run)


def check_torch_exportable(schedule: str) -> None:
    """Refuse --torch-csv for a round-robin schedule up front, by its name, instead of after building
    and lowering the whole plan (to_torch_csv would refuse it then, on its first FB action)."""
    if get_schedule(schedule).FIXED_PLACEMENT:
        return
    exportable = [name for name, module in SCHEDULES.items() if module.FIXED_PLACEMENT]
    raise SpecError(f"--torch-csv: torch.distributed.pipelining binds each stage to one rank, while schedule "
                    f"{schedule!r} dispatches stages round-robin over GPUs; exportable (fixed-placement) "
                    f"schedules: {', '.join(exportable)}")


def run(args: argparse.Namespace) -> int:
    if args.torch_csv:
        check_torch_exportable(args.schedule)
    sc = setup_from_args(args)
    plan = make_plan(sc, plan_request(args, args.schedule))
    csv_text = to_torch_csv(plan) if args.torch_csv else None  # refuse before writing anything
    write_json_atomic(args.output, plan_to_json(plan))
    if csv_text is not None:
        write_text_atomic(args.torch_csv, csv_text)
    n_actions = sum(len(v) for v in plan.lanes.values())
    print(f"rpsim: wrote {args.output}: {plan.schedule}, {plan.n_gpus} GPUs, {plan.n_mb} microbatches, "
          f"{plan.n_iters} iteration(s), {n_actions} actions, level {plan.level}", file=sys.stderr)
    if args.show:
        print(format_lanes(plan))
    return 0
