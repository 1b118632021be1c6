"""`rpsim export`: write a plan.json (and optionally torch's compute-only CSV, or the roundpipe library's
manual partition). `--plan FILE --library-plan OUT` converts an existing RoundPipe plan, such as the one
`rpsim search --export` wrote."""
from __future__ import annotations

import argparse
import sys

from rpsim.cli.setup_flags import (
    add_plan_flags,
    add_setup_flags,
    check_plan_flags,
    plan_request,
    setup_from_args,
)
from rpsim.errors import SpecError
from rpsim.export.library_plan import library_plan
from rpsim.export.torch_csv import to_torch_csv
from rpsim.ir.grid import format_lanes
from rpsim.ir.planio import load_plan, save_plan
from rpsim.report.files import write_json_atomic, write_text_atomic
from rpsim.schedules import SCHEDULES, get_schedule
from rpsim.steady_run import plan_to_save


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="write a plan for rpexec")
    add_setup_flags(p, need_model=False)
    add_plan_flags(p)
    p.add_argument("--schedule", default=None,
                   help="schedule to build, with --model and --gpus (rpsim list schedules; default: none)")
    p.add_argument("--plan", default=None,
                   help="an existing plan.json to convert instead (--library-plan; default: none)")
    p.add_argument("-o", "--output", default=None, help="plan.json to write (default: none)")
    p.add_argument("--library-plan", default=None,
                   help="also write the roundpipe library's manual partition (ModelExecutePlan fwd_plan / "
                        "bwd_plan layer ranges) of a RoundPipe plan (default: none)")
    p.add_argument("--torch-csv", default=None,
                   help="also write torch.distributed.pipelining's compute-only CSV (fixed-placement schedules; "
                        "default: none)")
    p.add_argument("--show", action="store_true", help="print each GPU's lanes as a text grid (default: off)")
    p.set_defaults(func=run, output_flags={"output": "-o/--output", "torch_csv": "--torch-csv",
                                           "library_plan": "--library-plan"})


def check_torch_exportable(schedule: str) -> None:
    """Refuse --torch-csv for a round-robin schedule up front, by its name, instead of after building
    and lowering the whole plan (to_torch_csv would refuse it then, on its first FB action)."""
    if get_schedule(schedule).TRAITS.placement.fixed:
        return
    exportable = [name for name, module in SCHEDULES.items() if module.TRAITS.placement.fixed]
    raise SpecError(f"--torch-csv: torch.distributed.pipelining binds each stage to one rank, while schedule "
                    f"{schedule!r} dispatches stages round-robin over GPUs; exportable (fixed-placement) "
                    f"schedules: {', '.join(exportable)}")


def check_args(args: argparse.Namespace) -> None:
    if args.plan:
        if args.schedule or args.model:
            raise SpecError("rpsim export: --plan FILE converts an existing plan; give it without --model / "
                            "--schedule")
        if not args.library_plan or args.output or args.torch_csv:
            raise SpecError("rpsim export --plan FILE: only --library-plan OUT applies to an existing plan")
        return
    missing = [f for f, v in (("--model", args.model), ("--gpus", args.gpus), ("--schedule", args.schedule)) if not v]
    if missing:
        raise SpecError(f"rpsim export needs {', '.join(missing)} (or --plan FILE with --library-plan OUT)")
    if not (args.output or args.library_plan):
        raise SpecError("rpsim export needs -o plan.json and/or --library-plan out.json")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.plan:
        plan = load_plan(args.plan)
        write_library_plan(args.library_plan, plan)
        return 0
    if args.torch_csv:
        check_torch_exportable(args.schedule)
    check_plan_flags(args, [args.schedule])
    sc = setup_from_args(args)
    req = plan_request(args, args.schedule)
    plan = plan_to_save(sc, req)  # `rpsim simulate --plan` of the file reports what `--schedule` does
    csv_text = to_torch_csv(plan) if args.torch_csv else None  # refuse before writing anything
    if args.library_plan:
        write_library_plan(args.library_plan, plan)
    if not args.output:
        return 0
    save_plan(plan, args.output)
    if csv_text is not None:
        write_text_atomic(args.torch_csv, csv_text)
    n_actions = sum(len(v) for v in plan.lanes.values())
    print(f"rpsim: wrote {args.output}: {plan.schedule}, {plan.n_gpus} GPUs, {plan.n_mb} microbatches, "
          f"{plan.n_iters} iteration(s), {n_actions} actions, level {plan.level}", file=sys.stderr)
    if args.show:
        print(format_lanes(plan))
    return 0


def write_library_plan(path: str, plan) -> None:
    lib = library_plan(plan)
    write_json_atomic(path, lib)
    print(f"rpsim: wrote {path}: {len(lib['fwd_plan'])} forward + {len(lib['bwd_plan'])} backward stages",
          file=sys.stderr)
