"""ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, Sec. 3.1): 1F1B with each backward
split into I (input gradient) and W (weight gradients), stage s on GPU s. W passes are deferred into
the drain bubble, so with F = I = W each GPU idles (p - 1) t instead of 1F1B's (p - 1) 3t, at 1F1B's
in-flight microbatch count. torch runs it as ScheduleInterleavedZeroBubble with one stage per rank."""
from __future__ import annotations

from rpsim.ir import Partition, Plan
from rpsim.schedules._fixed import check_fixed_inputs, repeat_iterations
from rpsim.schedules._zero_bubble import rank_order
from rpsim.schedules.base import BuildOptions, compute_plan
from rpsim.schedules.traits import CONTIGUOUS, ScheduleTraits

NAME = "zb-h1"
DESCRIPTION = "ZB-H1: 1F1B with backward split into I and W, W passes fill the drain; one stage per GPU"
TRAITS = ScheduleTraits(placement=CONTIGUOUS, split_backward=True, fast_estimate=None)


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    check_fixed_inputs(NAME, n_gpus, partition, n_mb, options)
    per_gpu = [rank_order(r, n_gpus, 1, n_mb) for r in range(n_gpus)]
    return compute_plan(NAME, n_gpus, n_mb, partition, repeat_iterations(per_gpu, options.n_iters), options,
                        extra={"virtual_stages": 1})
