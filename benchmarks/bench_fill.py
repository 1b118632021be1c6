"""Cost of one max-min fill (rpsim.sim.sharing.allocate_groups) on fills captured from a real run, under
several bottleneck-search settings; prints figures (benchmarks/notes-sim.md, session 17).

The fills of a run's first minutes are smaller than its steady ones, so they are taken from the middle
of the run: RoundPipe Llama-70B on h100xN (16 microbatches), --keep fills from a third of the way in.
Beside them, synthetic classes where nearly every round freezes a group of its own (--rounds-resources): the case a
heap of fair shares is for. Each setting (SCAN_ROUNDS, HEAP_FILL_RESOURCES) is timed in turn, --repeat
times, in this process; the minimum CPU time per fill is printed, and every setting must give the same
floats as the first (it exits 1 otherwise). With --instructions each setting is counted by valgrind's
cachegrind in a fresh process instead (deterministic; ~30x slower).

    python3 benchmarks/bench_fill.py [--gpus 8,32,64] [--repeat 7] [--instructions]
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rpsim.sim import sharing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_instructions import instructions_of  # the benchmarks' shared valgrind count

# (label, SCAN_ROUNDS, HEAP_FILL_RESOURCES): always scan; the heap from the first round over 24 resources
# (before session 17); the default now.
SETTINGS = (("scan only", 10**9, 10**9), ("heap from 24 resources", 0, 24),
            (f"default (scan {sharing.SCAN_ROUNDS} rounds, then heap)", sharing.SCAN_ROUNDS,
             sharing.HEAP_FILL_RESOURCES))

Fill = tuple[list[tuple[str, ...]], list[int], list[int]]  # allocate_groups' paths, priorities, counts


def captured_fills(n_gpus: int, keep: int) -> tuple[list[Fill], sharing.Links]:
    """`keep` fills of RoundPipe Llama-70B on h100x{n_gpus}, 16 microbatches, from a third of the run on."""
    from rpsim.planner import PlanRequest, make_plan_prefix
    from rpsim.scenario import make_scenario
    from rpsim.sim import bundle_fill
    from rpsim.sim.simulate import simulate
    from rpsim.specs import TrainingSpec
    fills: list[Fill] = []
    links_of: list[sharing.Links] = []
    original = bundle_fill.allocate_groups

    def recording(paths, priorities, counts, links):  # type: ignore[no-untyped-def]
        fills.append((list(paths), list(priorities), list(counts)))
        links_of[:] = [links]
        return original(paths, priorities, counts, links)

    sc = make_scenario("llama-70b", f"h100x{n_gpus}", TrainingSpec(seq_len=2048, global_batch=16, mb_size=1))
    plan, planned = make_plan_prefix(sc, PlanRequest("roundpipe"), 9)
    bundle_fill.allocate_groups = recording
    try:
        simulate(plan, sc, planned_iters=planned)
    finally:
        bundle_fill.allocate_groups = original
    start = len(fills) // 3
    return fills[start:start + keep], sharing.Links(links_of[0].capacity_bytes_per_s, links_of[0].partners)


def many_round_fills(n_resources: int, n_fills: int = 20) -> tuple[list[Fill], sharing.Links]:
    """Each group crosses a resource of its own (capacities all different) and one hub: one round per group."""
    rng = random.Random(n_resources)
    capacity = {f"r{k}": 1e9 * (1 + 0.37 * k) for k in range(n_resources)} | {"hub": 1e13}
    own = [r for r in capacity if r != "hub"]
    fills = [([(r, "hub") for r in rng.sample(own, len(own))], [1] * len(own), [1] * len(own))
             for _ in range(n_fills)]
    return fills, sharing.Links.of(capacity)


def run(fills: list[Fill], links: sharing.Links, scan_rounds: int, heap_resources: int) -> list[list[float]]:
    sharing.SCAN_ROUNDS, sharing.HEAP_FILL_RESOURCES = scan_rounds, heap_resources
    return [sharing.allocate_groups(paths, priorities, counts, links) for paths, priorities, counts in fills]


def instructions(data: str, scan_rounds: int, heap_resources: int, fill_too: bool) -> int:
    return instructions_of([__file__, "--count", data, str(scan_rounds), str(heap_resources)]
                           + (["--fill"] if fill_too else []))


def report(label: str, fills: list[Fill], links: sharing.Links, repeat: int, count: bool) -> bool:
    reference = run(fills, links, *SETTINGS[0][1:])
    same = all(run(fills, links, *setting[1:]) == reference for setting in SETTINGS[1:])
    figures = []
    if count:
        with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
            pickle.dump((fills, links), f)
        try:
            for name, scan_rounds, heap_resources in SETTINGS:
                n = instructions(f.name, scan_rounds, heap_resources, True) - \
                    instructions(f.name, scan_rounds, heap_resources, False)
                figures.append(f"{name} {n / len(fills) / 1e3:,.0f}K instructions")
        finally:
            os.unlink(f.name)
    else:
        best = {name: math.inf for name, *_ in SETTINGS}
        for _ in range(repeat):
            for name, scan_rounds, heap_resources in SETTINGS:
                start = time.process_time()
                run(fills, links, scan_rounds, heap_resources)
                best[name] = min(best[name], (time.process_time() - start) / len(fills))
        figures = [f"{name} {best[name] * 1e6:.1f} us" for name, *_ in SETTINGS]
    print(f"{label}: {len(fills)} fills; per fill: " + "; ".join(figures) + ("" if same else "; FLOATS DIFFER"))
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", default="8,32,64", help="captured runs: RoundPipe Llama-70B on h100xN")
    parser.add_argument("--keep", type=int, default=3000, help="fills kept per run")
    parser.add_argument("--rounds-resources", default="64,256", help="synthetic one-round-per-group classes")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--instructions", action="store_true", help="count instructions with valgrind")
    parser.add_argument("--count", nargs=3, help=argparse.SUPPRESS)  # the counted process
    parser.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:
        with open(args.count[0], "rb") as f:
            fills, links = pickle.load(f)
        if args.fill:
            run(fills, links, int(args.count[1]), int(args.count[2]))
        return
    if args.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions: valgrind is not installed here (valid: a machine with valgrind on PATH)")
    cases = [(f"h100x{n} mid-run", lambda n=int(n): captured_fills(n, args.keep))
             for n in args.gpus.split(",") if n]
    cases += [(f"{n} resources, a round per group", lambda n=int(n): many_round_fills(n))
              for n in args.rounds_resources.split(",") if n]
    same = [report(label, *make(), args.repeat, args.instructions) for label, make in cases]
    sys.exit(0 if all(same) else 1)


if __name__ == "__main__":
    main()
