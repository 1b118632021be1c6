"""One pcie-level simulation of Qwen3-235B-A22B under RoundPipe (142 stage slots: 47 forward stages of two
layers, the fused head stage, 94 one-layer backward stages; 16 microbatches, 3 async iterations) on
8x RTX 4090, and the SimPy engine's events per second; prints figures, asserts nothing.

Targets: the simulation (engine, memory, metrics) under 2 s on a 2-core machine (issue 4), 0.5 s
(issue 18). Building the plan (partition, builder, lowering, checks, and the dependency graph, which
check_plan builds once and simulate reuses) is timed separately.
Run: python3 benchmarks/bench_sim.py [--repeat 3] [--n-mb 16]
"""
from __future__ import annotations

import argparse
import time

import simpy

from rpsim.ir.deps import _build_dependency_facts
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import make_scenario
from rpsim.sim import engine
from rpsim.sim.engine import EngineInputs, run_engine
from rpsim.sim.simulate import cost_context, simulate
from rpsim.sim.topology import build_topology
from rpsim.specs import TrainingSpec

PARTITION = ",".join(["2"] * 47) + "|" + ",".join(["0"] + ["1"] * 94)


class CountingEnvironment(simpy.Environment):
    """Keeps its last instance, whose processed events are counted after the run (a separate run): every
    queue entry takes the next id of `_eid` (Environment.schedule and rpsim.sim.timer alike), so the
    events processed are the ids taken less the entries left (the engine's loop, rpsim.sim.timer.run_events,
    does not call `step`)."""

    last: simpy.Environment | None = None

    def __init__(self) -> None:
        super().__init__()
        CountingEnvironment.last = self

    @property
    def n_events(self) -> int:
        return next(self._eid) - len(self._queue)  # noqa: SLF001


def timed(fn, repeat: int):  # type: ignore[no-untyped-def]
    """(best wall s, best CPU s, value) over `repeat` calls: on a shared machine the minimum is the figure."""
    wall, cpu, value = float("inf"), float("inf"), None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return wall, cpu, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--n-mb", type=int, default=16)
    args = parser.parse_args()
    sc = make_scenario("qwen3-235b-a22b", "4090x8", TrainingSpec(seq_len=2048, global_batch=4 * args.n_mb,
                                                                 mb_size=4))
    plan_s, plan_cpu, plan = timed(lambda: make_plan(sc, PlanRequest("roundpipe", partition=PARTITION)),
                                   args.repeat)
    n_actions = sum(len(v) for v in plan.lanes.values())
    slots = len(plan.partition.fwd) + len(plan.partition.bwd)
    print(f"qwen3-235b-a22b RoundPipe on 4090x8: {slots} stage slots, {plan.n_mb} microbatches, "
          f"{plan.n_iters} iterations, {n_actions} actions")
    print(f"  make_plan (partition, build, lower, check): {plan_s:.2f} s wall, {plan_cpu:.2f} s CPU")
    sim_s, sim_cpu, result = timed(lambda: simulate(plan, sc), args.repeat)
    print(f"  simulate (engine, memory, metrics):  {sim_s:.2f} s wall, {sim_cpu:.2f} s CPU "
          f"(target < 0.5 s)")
    graph_s, _, graph = timed(lambda: _build_dependency_facts(plan), args.repeat)  # uncached: its cost
    inputs = EngineInputs(plan, graph, cost_context(plan, sc), build_topology(sc.server, sc.profile))
    engine_s, _, _ = timed(lambda: run_engine(inputs), args.repeat)
    print(f"    dependency graph (built in make_plan) {graph_s:.2f} s ({len(graph.edges)} edges); "
          f"engine {engine_s:.2f} s, memory and metrics the rest")
    original, engine.simpy.Environment = engine.simpy.Environment, CountingEnvironment  # type: ignore[misc]
    try:
        run_engine(inputs)
    finally:
        engine.simpy.Environment = original  # type: ignore[misc]
    n_events = CountingEnvironment.last.n_events  # type: ignore[union-attr]
    print(f"  engine: {n_events} events in {engine_s:.2f} s -> {n_events / engine_s:,.0f} events/s, "
          f"{n_actions / engine_s:,.0f} actions/s")
    m = result.metrics
    print(f"  result: iteration {m['iteration_s']:.2f} s, bubble {m['bubble']:.3f}, feasible {m['feasible']}")


if __name__ == "__main__":
    main()
