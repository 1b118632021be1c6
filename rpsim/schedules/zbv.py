"""ZB-V (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024, Sec. 6; torch ScheduleZBVZeroBubble):
two stages per GPU folded into a V (GPU g holds stages g and 2N - 1 - g: stages N - 1 and N share the
last GPU, and the loss stage 2N - 1 runs on GPU 0 next to stage 0), backward split into I and W. With
F = I = W the warm-up and drain bubbles are filled by the other chunk's work, so once there are enough
microbatches (M >= 2N - 1 fills the V) no GPU idles between its first and last action.

Order per GPU r (c0 = stage r, c1 = stage 2N - 1 - r): 2(N - r) - 1 forwards of c0; r pairs (F c1, F c0);
N - r triples (F c1, I c1, W c1); then F c0 I c0 W c0 F c1 I c1 W c1 until both chunks have run every
forward; then r pairs (I c0, I c1), N - r pairs (I c0, W c0), and the W passes left (c1's, then c0's).
The order is generated for max(M, 2N - 1) microbatches and the ones beyond M dropped, as torch does."""
from __future__ import annotations

from collections import defaultdict

from rpsim.ir import Partition, Plan
from rpsim.schedules._fixed import Op, check_fixed_inputs, repeat_iterations
from rpsim.schedules.base import BuildOptions, compute_plan
from rpsim.schedules.traits import TWO_STAGES, V_SHAPED, ScheduleTraits

NAME = "zbv"
DESCRIPTION = "ZB-V: two stages per GPU in a V, backward split into I and W, zero bubble in steady state"
TRAITS = ScheduleTraits(placement=V_SHAPED, virtual_stages=TWO_STAGES, split_backward=True, fast_estimate=None)


def rank_order(rank: int, n_gpus: int, n_mb: int) -> list[Op]:
    n, m = n_gpus, max(2 * n_gpus - 1, n_mb)
    c0, c1 = rank, 2 * n - 1 - rank
    count: dict[tuple[str, int], int] = defaultdict(int)
    order: list[Op] = []

    def run(kind: str, stage: int) -> None:
        order.append((kind, stage, count[(kind, stage)]))
        count[(kind, stage)] += 1

    for _ in range(2 * (n - rank) - 1):
        run("F", c0)
    for _ in range(rank):
        run("F", c1)
        run("F", c0)
    for _ in range(n - rank):
        for kind in "FIW":
            run(kind, c1)
    while count[("F", c1)] < count[("F", c0)] or count[("F", c0)] < m:
        if count[("F", c0)] < m:
            run("F", c0)
        run("I", c0)
        run("W", c0)
        for kind in "FIW":
            run(kind, c1)
    for _ in range(rank):
        run("I", c0)
        run("I", c1)
    for _ in range(n - rank):
        run("I", c0)
        run("W", c0)
    for stage in (c1, c0):
        while count[("W", stage)] < count[("I", stage)]:
            run("W", stage)
    return [op for op in order if op[2] < n_mb]


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    check_fixed_inputs(NAME, n_gpus, partition, n_mb, options, 2)
    per_gpu = [rank_order(r, n_gpus, n_mb) for r in range(n_gpus)]
    return compute_plan(NAME, n_gpus, n_mb, partition, repeat_iterations(per_gpu, options.n_iters), options,
                        extra={"virtual_stages": 2})
