"""CPU time of make_plan (partition, builder, lowering, checks with the dependency graph) on the plans
issue 18 names: Qwen3-235B-A22B RoundPipe on 8x RTX 4090 (bench_sim's plan), and Llama-70B RoundPipe
with 64 microbatches on 2 to 64 H100s; prints figures, asserts nothing. The cyclic GC is paused as
`rpsim` commands pause it (rpsim.gc_pause); --gc keeps it on. Minimum of --repeat runs. Each Llama-70B plan is
timed whole and as a command's first pass builds it (its first rpsim.steady_run.FIRST_BUILD_ITERS iterations,
rpsim.planner.make_plan_prefix).
Run: python3 benchmarks/bench_make_plan.py [--repeat 3] [--gpus 2,8,32,64] [--gc]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import time

from rpsim.gc_pause import gc_paused
from rpsim.planner import PlanRequest, make_plan, make_plan_prefix
from rpsim.scenario import make_scenario
from rpsim.specs import TrainingSpec
from rpsim.steady_run import FIRST_BUILD_ITERS

PARTITION_235B = ",".join(["2"] * 47) + "|" + ",".join(["0"] + ["1"] * 94)


def best_cpu_s(build, repeat: int, paused: bool):  # type: ignore[no-untyped-def]
    best, plan = float("inf"), None
    for _ in range(repeat):
        plan = None
        gc.collect()
        with gc_paused() if paused else contextlib.nullcontext():
            start = time.process_time()
            plan = build()
            best = min(best, time.process_time() - start)
    return best, plan


def report(label: str, build, repeat: int, paused: bool) -> None:  # type: ignore[no-untyped-def]
    cpu, plan = best_cpu_s(build, repeat, paused)
    n_actions = sum(len(v) for v in plan.lanes.values())
    print(f"{label}: make_plan {cpu:.2f} s CPU, {n_actions} actions, {plan.n_iters} iterations "
          f"({1e6 * cpu / n_actions:.0f} us per action)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gpus", default="2,8,32,64", help="H100 counts for the Llama-70B sweep")
    parser.add_argument("--gc", action="store_true", help="keep the cyclic GC on while building")
    args = parser.parse_args()
    sc = make_scenario("qwen3-235b-a22b", "4090x8", TrainingSpec(seq_len=2048, global_batch=64, mb_size=4))
    report("qwen3-235b-a22b RoundPipe 4090x8",
           lambda: make_plan(sc, PlanRequest("roundpipe", partition=PARTITION_235B)), args.repeat, not args.gc)
    for n in (int(x) for x in args.gpus.split(",")):
        sc = make_scenario("llama-70b", f"h100x{n}", TrainingSpec(seq_len=2048, global_batch=64, mb_size=1))
        repeat = 1 if n >= 32 else args.repeat
        report(f"llama-70b RoundPipe h100x{n}, 64 microbatches",
               lambda sc=sc: make_plan(sc, PlanRequest("roundpipe")), repeat, not args.gc)
        report(f"  the same, first {FIRST_BUILD_ITERS} iterations (a command's first pass)",
               lambda sc=sc: make_plan_prefix(sc, PlanRequest("roundpipe"), FIRST_BUILD_ITERS)[0], repeat, not args.gc)


if __name__ == "__main__":
    main()
