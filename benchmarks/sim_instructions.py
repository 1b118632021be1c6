"""Instructions one RoundPipe `simulate()` executes, counted by valgrind's cachegrind, for one or more source
trees side by side; prints figures, asserts nothing.

CPU time on the shared 2-core box moves by +-10-30% between runs of the same code (benchmarks/notes-sim.md,
sessions 7-10), so a change worth a few percent cannot be seen in it. The count of executed instructions
does not depend on the other processes (PYTHONHASHSEED is fixed, so dict and set orders repeat): it is the
figure to compare for small changes, with CPU time beside it for the large ones. A run is ~25-40x slower
under valgrind. Per case and tree it counts make_plan alone and make_plan + simulate (in fresh processes);
simulate's count is the difference.

    python3 benchmarks/sim_instructions.py --trees /tmp/base,. [--cases compare70,q235,h32] [--jobs 2]

Cases: compare70 = `rpsim compare --model llama-70b --gpus 4090x8`'s RoundPipe row; q235 = bench_sim.py's
235B plan; h2 / h8 / h32 = RoundPipe Llama-70B on h100x2 / x8 / x32 with 16 microbatches (bench_gpu_sweep's
setting with fewer microbatches, so that valgrind runs take minutes).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PARTITION_235B = ",".join(["2"] * 47) + "|" + ",".join(["0"] + ["1"] * 94)
CASES = ("compare70", "q235", "h2", "h8", "h32")
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def run_case(case: str, simulate_too: bool) -> None:
    """make_plan (and simulate) of `case` in this process: what valgrind counts."""
    from rpsim.gc_pause import gc_paused
    from rpsim.planner import PlanRequest, make_plan_prefix
    from rpsim.scenario import make_scenario
    from rpsim.sim.simulate import simulate
    from rpsim.specs import TrainingSpec

    if case == "compare70":
        sc = make_scenario("llama-70b", "4090x8", TrainingSpec(seq_len=2048, global_batch=64, mb_size=4))
        req = PlanRequest("roundpipe")
    elif case == "q235":
        sc = make_scenario("qwen3-235b-a22b", "4090x8", TrainingSpec(seq_len=2048, global_batch=64, mb_size=4))
        req = PlanRequest("roundpipe", partition=PARTITION_235B)
    else:
        n_gpus = int(case[1:])
        sc = make_scenario("llama-70b", f"h100x{n_gpus}", TrainingSpec(seq_len=2048, global_batch=16, mb_size=1))
        req = PlanRequest("roundpipe")
    with gc_paused():
        plan, planned = make_plan_prefix(sc, req, 9)
    if simulate_too:
        result = simulate(plan, sc, planned_iters=planned)
        print(f"{len(result.trace.events)} actions, iteration {result.metrics['iteration_s']!r} s")


def count(tree: str, case: str, simulate_too: bool) -> int:
    """Instructions of a fresh process running run_case with `tree` first on the import path."""
    return instructions_of([__file__, "--run", case] + (["--simulate"] if simulate_too else []),
                           {"PYTHONPATH": str(Path(tree).resolve())}, f"{tree}, {case}")


def instructions_of(script_argv: list[str], env: dict[str, str] | None = None, label: str = "") -> int:
    """Instructions valgrind's cachegrind counts in a fresh `python script_argv...` (PYTHONHASHSEED fixed, so
    dict and set orders repeat); `env` adds to this process's environment."""
    argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
            sys.executable, *script_argv]
    done = subprocess.run(argv, env=dict(os.environ, **(env or {}), PYTHONHASHSEED="0"), capture_output=True,
                          text=True, check=False)
    found = _REFS.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed ({label or ' '.join(script_argv)}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default=".", help="comma-separated source trees (the first is the reference)")
    parser.add_argument("--cases", default="compare70,q235,h32")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind processes at once")
    parser.add_argument("--run", choices=CASES, help=argparse.SUPPRESS)  # the counted process
    parser.add_argument("--simulate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_case(args.run, args.simulate)
        return
    if shutil.which("valgrind") is None:  # a clear error, not a traceback from the first subprocess
        parser.error("valgrind is not installed here (valid: a machine with valgrind on PATH, e.g. apt install valgrind)")
    trees, cases = args.trees.split(","), args.cases.split(",")
    for case in cases:
        if case not in CASES:
            raise SystemExit(f"--cases: unknown case {case!r}; valid choices: {', '.join(CASES)}")
    jobs = [(tree, case, sim) for case in cases for tree in trees for sim in (False, True)]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: count(*job), jobs)))
    for case in cases:
        ref = counts[(trees[0], case, True)] - counts[(trees[0], case, False)]
        for tree in trees:
            plan_ir = counts[(tree, case, False)]
            sim_ir = counts[(tree, case, True)] - plan_ir
            print(f"{case:10s} {tree}: make_plan {plan_ir / 1e9:7.3f} G instructions, simulate {sim_ir / 1e9:7.3f} G "
                  f"({100 * (sim_ir / ref - 1):+.2f}% against {trees[0]})")


if __name__ == "__main__":
    main()
