"""`rpsim search`: find the plan with the most tokens/s that fits -- schedule, partition, microbatching,
recompute, virtual stages, RoundPipe round size -- by a fast analytic stage and a full-simulator stage.
Prints the ranking and the Pareto frontier (stdout), progress (stderr); --export writes the best plan."""
from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING, Any

from rpsim.cli.setup_flags import add_setup_flags, setup_from_args, training_from_args
from rpsim.errors import Infeasible, SpecError
from rpsim.process_pool import sigterm_raises_terminated
from rpsim.report.table import format_table
from rpsim.scenario import Scenario
from rpsim.search.options import SearchOptions
from rpsim.search.pareto import NOISE_RTOL

if TYPE_CHECKING:  # the search and its workers are imported when a search runs, not for every command
    from rpsim.search.run import SearchResult
    from rpsim.search.tasks import Confirmed

GiB = 2**30
# A Dask scheduler address (distributed's "protocol://host:port"); a bare word used to escape as a
# ValueError traceback from inside dask.
CLUSTER_ADDRESS = re.compile(r"^((tcp|tls|ucx|ws|wss)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9._-]+):\d{1,5}$")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="search schedules, partitions and microbatching for the fastest plan "
                                  "that fits",
                       description="Searches every microbatch size that divides the global batch, unless "
                                   "--mb-size or --n-mb is given: then only that one.")
    add_setup_flags(p)
    p.add_argument("--budget", type=int, default=SearchOptions.budget,
                   help="fast-stage evaluations: the structured candidates, then local-search moves "
                        "(default %(default)s)")
    p.add_argument("--confirm", type=int, default=SearchOptions.top_k,
                   help="feasible plans the full simulator confirms, at least --top (default %(default)s)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: every core)")
    p.add_argument("--cluster", default=None, help="run on an existing Dask scheduler, e.g. tcp://host:8786 (default: none, local processes)")
    p.add_argument("--seed", type=int, default=0, help="seed that orders the local-search moves (default %(default)s)")
    p.add_argument("--top", type=int, default=SearchOptions.top_k,
                   help="ranked plans to print, table or json (default %(default)s)")
    p.add_argument("--schedules", default=None, help="comma-separated schedules to search (default: all)")
    p.add_argument("--export", default=None,
                   help="write the best plan as plan.json for rpsim simulate / rpexec (default: none)")
    p.add_argument("--library-plan", default=None,
                   help="write the best plan's partition for the roundpipe library (RoundPipe plans only; "
                        "default: none)")
    p.add_argument("--format", default="table", choices=["table", "json"],
                   help="table for people, json for scripts (default %(default)s)")
    p.set_defaults(func=run, output_flags={"export": "--export", "library_plan": "--library-plan"})


def options_from_args(args: argparse.Namespace) -> SearchOptions:
    for flag in ("budget", "confirm", "top"):
        if getattr(args, flag) < 1:
            raise SpecError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.jobs is not None and args.jobs < 1:
        raise SpecError(f"--jobs must be >= 1, got {args.jobs}")
    if args.cluster is not None and not CLUSTER_ADDRESS.match(args.cluster):
        raise SpecError(f"--cluster {args.cluster!r}: not a Dask scheduler address; valid: [SCHEME://]HOST:PORT "
                        "with SCHEME tcp, tls, ucx, ws or wss, e.g. tcp://10.0.0.5:8786")
    schedules = None
    if args.schedules:
        from rpsim.cli.cmd_compare import parse_schedules
        schedules = tuple(parse_schedules(args.schedules))
    pinned = args.mb_size is not None or args.n_mb is not None  # an explicit microbatching is kept
    mb_sizes = (training_from_args(args).mb_size,) if pinned else None
    # --top 5 must show 5 simulated plans, so the simulator confirms at least that many.
    return SearchOptions(budget=args.budget, top_k=max(args.confirm, args.top), jobs=args.jobs, cluster=args.cluster,
                         seed=args.seed, schedules=schedules, mb_sizes=mb_sizes)


class _Bars:
    """tqdm bars on stderr, one per stage; on a non-terminal, one summary line per stage instead."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __call__(self, stage: str, n: int, total: int) -> None:
        from tqdm import tqdm
        if stage not in self.bars:
            self.bars[stage] = tqdm(total=total, desc=f"rpsim search: {stage}", unit="plan", file=sys.stderr,
                                    disable=None, leave=False)
        self.bars[stage].update(n)
        self.counts[stage] = self.counts.get(stage, 0) + n

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def run(args: argparse.Namespace) -> int:
    from rpsim.ir.planio import save_plan
    from rpsim.search.run import search
    from rpsim.search.space import plan_request
    from rpsim.search.workspace import Workspace
    from rpsim.steady_run import plan_to_save
    sc = setup_from_args(args)
    options = options_from_args(args)
    bars = _Bars()
    try:
        with sigterm_raises_terminated():  # the workers stop as on Ctrl-C (rpsim.process_pool)
            result = search(sc, options, bars)
    finally:
        bars.close()
    s = result.stage_s
    skipped = f" ({len(result.skipped)} more skipped by their bounds)" if result.skipped else ""
    print(f"rpsim: search evaluated {result.n_fast} plans with the fast estimate{skipped} in {s['fast']:.1f} s "
          f"+ {s['local_search']:.1f} s local search, {result.n_full} with the full simulator in "
          f"{s['full']:.1f} s", file=sys.stderr)
    if result.best is None:
        raise Infeasible(nothing_fits(sc, result, options))
    if args.export or args.library_plan:
        best = result.best.candidate
        variant = Workspace(sc).scenario(best.mb_size, best.recompute)
        plan = plan_to_save(variant, plan_request(best))  # as confirmed, steady iterations included
        if args.library_plan:
            from rpsim.cli.cmd_export import write_library_plan
            write_library_plan(args.library_plan, plan)
        if args.export:
            save_plan(plan, args.export)
            print(f"rpsim: wrote {args.export}: {best.label()}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(to_json(result, args.top), indent=1))
    else:
        print(report(sc, result, args.top))
    return 0


def row_of(c: Confirmed) -> dict[str, Any]:
    """compare's result keys, plus what the search chose."""
    d = c.candidate
    return {**c.metrics, "plan": d.label(), "partitioner": d.partitioner, "partition_spec": d.partition,
            "recompute": d.recompute, "round_size": d.round_size, "virtual_stages": d.virtual_stages,
            "estimated_tokens_per_s": c.estimate.tokens_per_s if c.estimate else None,
            "work_bound_s": c.work_bound_s, "below_work_bound": c.below_work_bound,
            "ranked_tokens_per_s": c.ranked_tokens_per_s}


def to_json(r: SearchResult, top: int) -> dict[str, Any]:
    return {"plans": [row_of(c) for c in r.ranked[:top]], "frontier": [row_of(c) for c in r.frontier],
            "reference": row_of(r.reference) if r.reference else None,
            "evaluated": {"candidates": r.n_candidates, "fast": r.n_fast, "fast_feasible": r.n_fast_feasible,
                          "skipped": len(r.skipped), "full": r.n_full, "seconds": r.stage_s}}


def _mem(c: Confirmed) -> float:
    return max(c.metrics["peak_gpu_mem_bytes"]) / GiB


def report(sc: Scenario, r: SearchResult, top: int) -> str:
    t = sc.training
    lines = [(f"# {sc.model.name} on {sc.server.name} ({sc.server.n_gpus}x {sc.server.gpu.name}), {t.mode}, "
              f"{t.precision}, seq {t.seq_len}, global batch {t.global_batch} "
              f"({t.tokens_per_iteration} tokens/iteration)"),
             (f"# evaluated: {r.n_candidates - len(r.skipped)} structured candidates + "
              f"{r.n_fast - r.n_candidates + len(r.skipped)} local-search moves = {r.n_fast} plans by the fast "
              f"estimate ({r.n_fast_feasible} fit; {len(r.skipped)} more skipped: their lower bounds show they "
              f"could not be confirmed), {r.n_full} by the full simulator"),
             ""]
    rows = []
    for i, c in enumerate(r.ranked[:top], 1):
        m = c.metrics
        note = "reference" if c is r.reference else m["reason"]
        if c.below_work_bound:
            note = f"ranked at the work bound: {c.ranked_tokens_per_s:.0f}"
        if m["iteration_s"] is None:
            rows.append([i, c.candidate.label(), m["n_mb"], "-", "-", "-", "-", "-", "-", note])
            continue
        rows.append([i, c.candidate.label(), m["n_mb"], round(m["iteration_s"], 3), round(m["tokens_per_s"]),
                     round(100 * m["mfu"], 1), round(100 * m["bubble"], 1), round(_mem(c), 1),
                     round(m["peak_host_mem_bytes"] / GiB, 1), note])
    lines.append(format_table(["#", "plan", "n_mb", "iter_s", "tokens/s", "MFU%", "bubble%", "GPU_GiB",
                               "host_GiB", "note"], rows))
    best = r.best
    assert best is not None
    lines += ["", f"best: {best.candidate.label()}, partition {best.candidate.partition}"]
    ref = r.reference
    if ref is not None and ref.feasible:
        lines.append(f"      {best.ranked_tokens_per_s / ref.ranked_tokens_per_s:.3f}x the tokens/s of "
                     f"RoundPipe's own partitioner ({ref.candidate.label()}: {ref.ranked_tokens_per_s:.0f})")
    elif ref is not None:
        lines.append(f"      RoundPipe's own partitioner does not fit: {ref.metrics['reason']}")
    if any(c.below_work_bound for c in r.ranked[:top]):
        lines.append("note: the simulator measures an async plan's steady state over a few iterations; where "
                     "that came out below the GPUs' total work per iteration (impossible in a real steady "
                     "state), the ranking uses the work bound")
    lines += ["", (f"Pareto frontier (tokens/s against peak GPU memory, simulated; points within "
                   f"{100 * NOISE_RTOL:g}% of another on both axes dropped):")]
    lines.append(format_table(["GPU_GiB", "tokens/s", "plan"],
                              [[round(_mem(c), 1), round(c.ranked_tokens_per_s), c.candidate.label()]
                               for c in r.frontier]))
    return "\n".join(lines)


def nothing_fits(sc: Scenario, r: SearchResult, options: SearchOptions) -> str:
    """The nearest miss with the memory it needs, then the relaxations that fit."""
    gpu_cap, host_cap = sc.server.gpu.memory_bytes, sc.server.host.dram_bytes
    simulated = [c for c in r.ranked if c.metrics["iteration_s"] is not None]
    lines = [(f"no plan for {sc.model.name} on {sc.server.name} fits ({r.n_fast} plans estimated, "
              f"{r.n_full} simulated)")]
    if simulated:
        def fill(c: Confirmed) -> float:
            m = c.metrics
            return max(max(m["peak_gpu_mem_bytes"]) / gpu_cap, m["peak_host_mem_bytes"] / host_cap)
        near = min(simulated, key=lambda c: (fill(c), c.candidate.sort_key))
        gpu, host = max(near.metrics["peak_gpu_mem_bytes"]), near.metrics["peak_host_mem_bytes"]
        if host > host_cap:
            need = f"needs >= {host / GiB:.0f} GiB host memory; the server has {host_cap / GiB:.0f} GiB"
        else:
            need = (f"needs >= {gpu / GiB:.1f} GiB per GPU; the {sc.server.gpu.name} has "
                    f"{gpu_cap / GiB:.1f} GiB")
        lines.append(f"nearest plan: {near.candidate.label()} {need}")
    else:
        lines += [f"  {x}" for x in sorted({c.metrics['reason'] for c in r.ranked})[:3]]
    print("rpsim: nothing fits; trying LoRA, a smaller global batch and a shorter sequence ...",
          file=sys.stderr)
    from rpsim.search.relax import relaxations
    found = relaxations(sc, options)
    for x in found:
        lines.append(f"fits with {x.flags}: {x.best.candidate.label()}, "
                     f"{x.best.metrics['tokens_per_s']:.1f} tokens/s")
    if not found:
        lines.append("no relaxation tried (LoRA, a smaller global batch, a shorter sequence) fits either")
    return "\n".join(lines)
