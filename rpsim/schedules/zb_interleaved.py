"""Interleaved zero bubble (torch ScheduleInterleavedZeroBubble, the ZB1P schedule of Qi et al., ICLR
2024, over Megatron's virtual stages): V stages per GPU, stage s on GPU s mod N, the interleaved 1F1B
table with backward split into I and W and each GPU's W passes deferred into the drain."""
from __future__ import annotations

from rpsim.ir import Partition, Plan
from rpsim.schedules._fixed import check_fixed_inputs, repeat_iterations
from rpsim.schedules._zero_bubble import rank_order
from rpsim.schedules.base import BuildOptions, compute_plan
from rpsim.schedules.traits import LOOPED, ScheduleTraits, VirtualStages

NAME = "zb-interleaved"
DESCRIPTION = "Interleaved zero bubble: V stages per GPU, I and W split, W passes fill the drain"
# V = 1 is ZB-H1: the search starts at 2.
TRAITS = ScheduleTraits(placement=LOOPED, virtual_stages=VirtualStages(fixed=None, minimum=2),
                        split_backward=True, fast_estimate=None)


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    v = options.virtual_stages
    check_fixed_inputs(NAME, n_gpus, partition, n_mb, options, v)
    per_gpu = [rank_order(r, n_gpus, v, n_mb) for r in range(n_gpus)]
    return compute_plan(NAME, n_gpus, n_mb, partition, repeat_iterations(per_gpu, options.n_iters), options)
