"""Simulator cost against GPU count: RoundPipe (and GPipe / 1F1B) on h100xN with Llama-70B and 64
microbatches at the pcie level; prints, per N, the plan size, simulate()'s CPU and wall time and the cost
per action; asserts nothing.

Target (issue 18): RoundPipe on h100x64 at most 10 s, and the cost per action within 2x from 2 to 64
GPUs. CPU time is the figure to compare on a shared machine (wall time is printed beside it): the median
of --repeat runs. The plan is built as commands build it (rpsim.steady_run.simulate_planned: at most
FIRST_BUILD_ITERS of its iterations, the whole plan again only if that run is not the whole plan's);
--whole-plan builds every planned iteration, as before session 8.
Run: python3 benchmarks/bench_gpu_sweep.py [--gpus 2,4,8,16,32,64] [--schedules roundpipe] [--repeat 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

from rpsim.planner import PlanRequest, make_plan_prefix
from rpsim.scenario import make_scenario
from rpsim.sim.simulate import simulate
from rpsim.specs import TrainingSpec
from rpsim.steady_run import FIRST_BUILD_ITERS, runs_as_whole_plan


def measure(schedule: str, n_gpus: int, n_mb: int, repeat: int, whole_plan: bool) -> str:
    sc = make_scenario("llama-70b", f"h100x{n_gpus}", TrainingSpec(seq_len=2048, global_batch=n_mb, mb_size=1))
    start = time.process_time()
    plan, planned = make_plan_prefix(sc, PlanRequest(schedule), None if whole_plan else FIRST_BUILD_ITERS)
    plan_cpu_s = time.process_time() - start
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = simulate(plan, sc, planned_iters=planned)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    note = ""
    if plan.n_iters < planned and not runs_as_whole_plan(result, plan.n_iters):
        note = " (not the whole plan's run: a command simulates the whole plan again, not timed here)"
    cpu_s, wall_s = statistics.median(cpus), statistics.median(walls)
    n_actions = sum(len(lane) for lane in plan.lanes.values())
    iters = result.metrics["n_iters"]  # fewer than planned when the run stopped at steady state
    n_run = len(result.trace.events)  # the actions of the iterations simulated
    return (f"{schedule:10s} {n_gpus:3d} GPUs: {planned:2d} iterations planned, {plan.n_iters:2d} built, {iters} "
            f"simulated, {n_run:7d} of {n_actions:7d} actions; make_plan {plan_cpu_s:6.2f} s CPU; simulate "
            f"{cpu_s:6.2f} s CPU ({wall_s:6.2f} s wall), {1e6 * cpu_s / n_run:6.1f} us CPU per simulated action{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", default="2,4,8,16,32,64")
    parser.add_argument("--schedules", default="roundpipe")
    parser.add_argument("--n-mb", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--whole-plan", action="store_true", help="build every planned iteration (default: as "
                        "commands build the plan, at most rpsim.steady_run.FIRST_BUILD_ITERS first)")
    args = parser.parse_args()
    for schedule in args.schedules.split(","):
        for n_gpus in (int(n) for n in args.gpus.split(",")):
            print(measure(schedule, n_gpus, args.n_mb, args.repeat, args.whole_plan), flush=True)


if __name__ == "__main__":
    main()
