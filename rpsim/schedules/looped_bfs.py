"""Looped BFS (Lamy-Poirier 2023, torch ScheduleLoopedBFS): V stages per GPU, stage s on GPU s % N.
Each GPU runs all microbatches of a stage before its next stage; backward visits stages and microbatches
in reverse."""
from __future__ import annotations

from rpsim.ir import Partition, Plan
from rpsim.schedules._fixed import Op, check_fixed_inputs, repeat_iterations
from rpsim.schedules.base import BuildOptions, compute_plan
from rpsim.schedules.traits import LOOPED, ScheduleTraits, VirtualStages

NAME = "looped-bfs"
DESCRIPTION = "Looped BFS: V stages per GPU, all microbatches of a stage before the next, flush each iteration"
TRAITS = ScheduleTraits(placement=LOOPED, virtual_stages=VirtualStages(fixed=None, minimum=1))


def rank_order(rank: int, n_gpus: int, virtual_stages: int, n_mb: int) -> list[Op]:
    stages = range(rank, n_gpus * virtual_stages, n_gpus)
    # Reverse microbatch order in backward: the last forward's activations are the freshest (torch does so).
    return ([("F", s, m) for s in stages for m in range(n_mb)]
            + [("B", s, m) for s in reversed(stages) for m in reversed(range(n_mb))])


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    v = options.virtual_stages
    check_fixed_inputs(NAME, n_gpus, partition, n_mb, options, v)
    per_gpu = [rank_order(r, n_gpus, v, n_mb) for r in range(n_gpus)]
    return compute_plan(NAME, n_gpus, n_mb, partition, repeat_iterations(per_gpu, options.n_iters), options)
