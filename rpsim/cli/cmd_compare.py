"""`rpsim compare`: every schedule on one model and server, best first."""
from __future__ import annotations

import argparse
import csv
import io
import json

from rpsim.cli.setup_flags import (
    add_plan_flags,
    add_setup_flags,
    check_plan_flags,
    plan_request,
    setup_from_args,
)
from rpsim.compare import Row, compare_rows, rank, speedup_over_baselines
from rpsim.errors import SpecError
from rpsim.report.table import format_table
from rpsim.scenario import Scenario
from rpsim.schedules import SCHEDULES, get_schedule
from rpsim.sim.hop import hop_delay
from rpsim.sim.steady import CONVERGED_SPANS

COLUMNS = ("schedule", "feasible", "iteration_s", "tokens_per_s", "mfu", "bubble", "bubble_fill", "bubble_drain",
           "bubble_switch", "bubble_intra", "peak_gpu_mem_bytes", "peak_host_mem_bytes", "n_mb", "mb_size", "reason")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="compare schedules on one model and server")
    add_setup_flags(p)
    add_plan_flags(p)
    p.add_argument("--schedules", default=",".join(SCHEDULES), help="comma-separated schedule names (default: all: %(default)s)")
    p.add_argument("--format", default="table", choices=["table", "json", "csv"],
                   help="table for people, json or csv for scripts (default %(default)s)")
    p.add_argument("--plot", default=None, help="write a comparison figure: .png, .svg or .pdf (default: none)")
    p.add_argument("--jobs", type=int, default=None,
                   help="worker processes simulating the schedules, as `rpsim search --jobs` (default: every core; "
                        "1: in this process)")
    p.set_defaults(func=run, output_flags={"plot": "--plot"})


def parse_schedules(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise SpecError(f"--schedules is empty; valid choices: {', '.join(SCHEDULES)}")
    for n in names:
        get_schedule(n)
    return names


def header(sc: Scenario, args: argparse.Namespace) -> str:
    t = sc.training
    lines = [(f"# {sc.model.name} on {sc.server.name} ({sc.server.n_gpus}x {sc.server.gpu.name}, p2p {sc.server.p2p}), "
             f"{t.mode}, {t.precision}, recompute {t.recompute}, fidelity {args.fidelity}"),
             (f"# seq {t.seq_len}, global batch {t.global_batch} = {t.n_mb} microbatches x {t.mb_size} "
             f"({t.tokens_per_iteration} tokens/iteration); async schedules: steady-state iteration")]
    if args.fidelity == "hop":
        hop = hop_delay("hop", sc)
        lines.append(f"# hop: {hop.seconds * 1e3:.3f} ms per cross-GPU dependency, {hop.source}")
    lines += [f"# note: {n}" for n in sc.costs.notes]
    return "\n".join(lines)


def table_rows(rows: list[Row]) -> list[list[object]]:
    out = []
    for r in rows:
        m = r.metrics
        if m["iteration_s"] is None:
            out.append([m["schedule"], "no", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", m["reason"]])
            continue
        pct = lambda x: round(100 * x, 1)
        out.append([m["schedule"], "yes" if m["feasible"] else "no", round(m["iteration_s"], 3),
                    round(m["tokens_per_s"]), pct(m["mfu"]), pct(m["bubble"]), pct(m["bubble_fill"]),
                    pct(m["bubble_drain"]), pct(m["bubble_switch"]), pct(m["bubble_intra"]),
                    round(max(m["peak_gpu_mem_bytes"]) / 2**30, 1), round(m["peak_host_mem_bytes"] / 2**30, 1),
                    m["reason"] or m.get("weights", "")])
    return out


def run(args: argparse.Namespace) -> int:
    if args.plot:
        from rpsim.plot.save import figure_format
        figure_format(args.plot)  # a bad extension fails before any simulation
    if args.jobs is not None and args.jobs < 1:
        raise SpecError(f"--jobs must be >= 1, got {args.jobs}")
    names = parse_schedules(args.schedules)
    check_plan_flags(args, names)
    sc = setup_from_args(args)
    # The flags were checked for all schedules up front (check_plan_flags); what is left is a schedule's
    # own structure not fitting the model or setup: compare_row makes that a row that was not built.
    rows = rank(compare_rows(sc, [plan_request(args, name) for name in names], args.jobs, bool(args.plot)))
    if args.plot:
        from rpsim.plot.compare_figure import save_compare_figure
        save_compare_figure(rows, sc, args.plot)
    emit(rows, sc, args)
    return 0 if any(r.metrics["feasible"] for r in rows) else 1


def emit(rows: list[Row], sc: Scenario, args: argparse.Namespace, ranked: bool = True) -> None:
    """Print the rows; `ranked` (several schedules compared) adds the best-against-baseline line."""
    metrics = [r.metrics for r in rows]
    if args.format == "json":
        print(json.dumps(metrics, indent=1))
        return
    if args.format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        for m in metrics:
            w.writerow([_csv(m.get(c)) for c in COLUMNS])
        print(buf.getvalue(), end="")
        return
    print(header(sc, args))
    print(format_table(["schedule", "feasible", "iter_s", "tokens/s", "MFU%", "bubble%", "fill", "drain", "switch",
                        "intra", "GPU_GiB", "host_GiB", "weights / reason"], table_rows(rows)))
    for m in metrics:
        if m.get("steady_state"):
            print(iterations_note(m))
    s = speedup_over_baselines(rows) if ranked else None
    if s:
        print(f"\nbest: {s[0]}, {s[2]:.2f}x the tokens/s of the best baseline ({s[1]})")
    elif not any(m["feasible"] for m in metrics):
        what = "no schedule fits" if ranked else "this plan does not fit"
        print(f"\n{what} this server; the reasons above name the GPU or host memory that is short")


def iterations_note(m: dict) -> str:
    """How many iterations an async row's figures come from (JSON: n_iters of planned_iters)."""
    if m["n_iters"] < m["planned_iters"]:
        return (f"# note: {m['schedule']}: steady state after {m['n_iters']} of {m['planned_iters']} planned "
                f"iterations (iteration time converged within 0.1% over {CONVERGED_SPANS} spans)")
    return f"# note: {m['schedule']}: {m['n_iters']} iterations simulated"


def _csv(v: object) -> object:
    if isinstance(v, list):
        return max(v) if v else ""
    return "" if v is None else v
