"""GPipe (Huang et al. 2019): every forward, then every backward; stage s on GPU s.
Backward runs microbatches in increasing order, as torch's ScheduleGPipe does."""
from __future__ import annotations

from rpsim.ir import Partition, Plan
from rpsim.schedules._fixed import Op, check_fixed_inputs, repeat_iterations
from rpsim.schedules.base import BuildOptions, compute_plan
from rpsim.schedules.traits import CONTIGUOUS, ScheduleTraits

NAME = "gpipe"
DESCRIPTION = "GPipe: all forwards then all backwards, one stage per GPU, flush each iteration"
TRAITS = ScheduleTraits(placement=CONTIGUOUS)


def rank_order(rank: int, n_mb: int) -> list[Op]:
    return [("F", rank, m) for m in range(n_mb)] + [("B", rank, m) for m in range(n_mb)]


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    # virtual_stages is ignored (one stage per GPU), so a shared BuildOptions can drive every schedule.
    check_fixed_inputs(NAME, n_gpus, partition, n_mb, options)
    per_gpu = [rank_order(r, n_mb) for r in range(n_gpus)]
    return compute_plan(NAME, n_gpus, n_mb, partition, repeat_iterations(per_gpu, options.n_iters), options,
                        extra={"virtual_stages": 1})
