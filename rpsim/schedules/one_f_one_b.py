"""1F1B (PipeDream-Flush, Narayanan et al. 2021) in torch Schedule1F1B's runtime order: stage s on GPU s,
warm-up min(M, N - s) forwards, then alternate one backward and one forward, then drain the backwards."""
from __future__ import annotations

from rpsim.ir import Partition, Plan
from rpsim.schedules._fixed import Op, check_fixed_inputs, repeat_iterations
from rpsim.schedules.base import BuildOptions, compute_plan
from rpsim.schedules.traits import CONTIGUOUS, ScheduleTraits

NAME = "1f1b"
DESCRIPTION = "1F1B: warm-up forwards, then one backward / one forward, one stage per GPU, flush each iteration"
TRAITS = ScheduleTraits(placement=CONTIGUOUS)


def rank_order(rank: int, n_gpus: int, n_mb: int) -> list[Op]:
    # Unlike torch's constructor we accept M < N: the runtime loop it documents is well defined there.
    warmup = min(n_mb, n_gpus - rank)
    order: list[Op] = [("F", rank, m) for m in range(warmup)]
    for b in range(n_mb):
        order.append(("B", rank, b))
        if warmup + b < n_mb:
            order.append(("F", rank, warmup + b))
    return order


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    # virtual_stages is ignored (one stage per GPU), so a shared BuildOptions can drive every schedule.
    check_fixed_inputs(NAME, n_gpus, partition, n_mb, options)
    per_gpu = [rank_order(r, n_gpus, n_mb) for r in range(n_gpus)]
    return compute_plan(NAME, n_gpus, n_mb, partition, repeat_iterations(per_gpu, options.n_iters), options,
                        extra={"virtual_stages": 1})
