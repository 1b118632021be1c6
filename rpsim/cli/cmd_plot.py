"""`rpsim plot`: a bubble chart (or, with --memory, the memory timeline) of a trace file, of a plan
(simulated first), or of one schedule built from the model flags; --chrome-trace converts the same trace."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from rpsim.cli.setup_flags import (
    add_plan_flags,
    add_setup_flags,
    check_plan_flags,
    plan_request,
    setup_from_args,
)
from rpsim.compare import run_one
from rpsim.errors import Infeasible, SpecError
from rpsim.ir.planio import load_plan
from rpsim.report.files import write_json_atomic
from rpsim.scenario import Scenario, scenario_from_setup
from rpsim.sim.simulate import SimResult, simulate
from rpsim.sim.trace import load_trace
from rpsim.sim.trace_match import check_trace_matches_plan


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="draw a bubble chart or memory timeline of a trace, a plan or a schedule")
    p.add_argument("--trace", default=None, help="trace.json (simulated or measured) to draw as it is (default: none)")
    p.add_argument("--plan", default=None, help="plan.json: simulated and drawn; with --trace, gives the "
                   "trace's dependencies (Chrome flows) and iteration window (default: none)")
    add_setup_flags(p, need_model=False)
    add_plan_flags(p)
    p.add_argument("--schedule", default=None, help="schedule to build and draw, with --model and --gpus instead of a file (default: none)")
    p.add_argument("-o", "--output", default=None, help="figure to write: .png, .svg or .pdf (default: none)")
    p.add_argument("--memory", action="store_true", help="draw GPU and host memory (GiB) over time instead (default: off)")
    p.add_argument("--chrome-trace", default=None, help="also write the trace as Chrome / Perfetto JSON (default: none)")
    p.set_defaults(func=run, output_flags={"output": "-o/--output", "chrome_trace": "--chrome-trace"})


def run(args: argparse.Namespace) -> int:
    from rpsim.plot.save import figure_format, save_figure
    if not (args.output or args.chrome_trace):
        raise SpecError("rpsim plot needs -o FIGURE (.png, .svg or .pdf) and/or --chrome-trace FILE")
    if args.output:
        figure_format(args.output)  # a bad extension fails before any simulation
    if args.trace and args.memory:
        raise SpecError(f"--memory: the trace file {args.trace!r} has no memory timeline (measured traces "
                        "never do); draw memory from --plan FILE or --model, --gpus and --schedule")
    result, sc = (None, None) if args.trace else simulated(args)
    trace = load_trace(args.trace) if args.trace else result.trace  # type: ignore[union-attr]
    plan = result.plan if result else (load_plan(args.plan) if args.plan else None)
    if args.trace and plan is not None:  # arrows from an unrelated plan would be drawn without a word
        check_trace_matches_plan(plan, trace, args.trace, args.plan)
    metrics = result.metrics if result else None
    if args.output:
        save_figure(figure(args, trace, plan, metrics, result, sc), args.output)
        print(f"rpsim: wrote {args.output} ({len(trace.events)} events)", file=sys.stderr)
    if args.chrome_trace:
        from rpsim.plot.chrome import chrome_trace
        write_json_atomic(args.chrome_trace, chrome_trace(plan, trace))
        flows = "with" if plan is not None else "without (no plan given)"
        print(f"rpsim: wrote {args.chrome_trace} {flows} dependency flows", file=sys.stderr)
    return 0


def simulated(args: argparse.Namespace) -> tuple[SimResult, Scenario]:
    if args.plan:
        plan = load_plan(args.plan)
        sc = scenario_from_setup(dict(plan.setup))
        return simulate(plan, sc), sc
    if not (args.model and args.gpus and args.schedule):
        raise SpecError("rpsim plot needs --trace FILE, --plan FILE, or --model, --gpus and --schedule")
    check_plan_flags(args, [args.schedule])
    sc = setup_from_args(args)
    row = run_one(sc, plan_request(args, args.schedule))
    if row.result is None:  # nothing was built, so nothing can be drawn
        raise Infeasible(f"{args.schedule}: {row.metrics['reason']}")
    return row.result, sc


def figure(args: argparse.Namespace, trace: Any, plan: Any, metrics: Any, result: SimResult | None,
           sc: Scenario | None) -> Any:
    if args.memory:
        from rpsim.plot.memory_figure import memory_figure
        assert result is not None and sc is not None
        return memory_figure(result, sc)
    from rpsim.plot.bubble_figure import bubble_figure
    return bubble_figure(trace, plan, metrics, sc=sc)
