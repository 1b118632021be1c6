"""DualPipeV (DeepSeek-V3 technical report, arXiv 2412.19437, Sec. 3.2.1, in its "V" form; torch
ScheduleDualPipeV): two stages per GPU folded into a V (GPU g holds stages g and 2N - 1 - g). In the
steady state each GPU pairs the forward of one chunk with the full backward of the other, and the pair
is issued as one overlapped unit; warm-up and drain split some backwards into I and W (a W queue fills
the bubbles), the rest run as one B.

The overlapped pairs are part of the plan: each is an F and a B adjacent on the compute lane, listed in
plan.options["overlapped"] as [gpu, "F action", "B action"] (exported to torch as (F;B)OVERLAP_F_B).
The simulator runs a pair back to back on the GPU's one compute stream: DualPipe overlaps a pair to
hide expert-parallel all-to-all communication behind the other's compute, and a pipeline-only plan has
no such communication, so the pair's compute time is the sum of its parts.

Order per GPU r (c0 = stage r, c1 = stage 2N - 1 - r), with M >= 2N microbatches: 2(N - r - 1) forwards
of c0; r + 1 pairs (F c0, F c1); N - r - 1 times (I c1, one queued W, F c1); M - 2N + r + 1 times the
overlapped pairs (F c0 + B c1) and (F c1 + B c0) (the last GPU runs its first F c0, B c1 unpaired);
N - r - 1 times (B c1, then F c1 + B c0 overlapped); r + 1 pairs (c1, c0) of backwards that turn into
I from the middle pair on; N - r - 1 times (a queued W, a backward of c0); r + 1 queued W passes."""
from __future__ import annotations

from collections import defaultdict, deque

from rpsim.ir import Action, Partition, Plan
from rpsim.schedules._fixed import Op, check_fixed_inputs, repeat_iterations
from rpsim.schedules.base import BuildOptions, compute_plan, require
from rpsim.schedules.traits import TWO_STAGES, V_SHAPED, ScheduleTraits

NAME = "dualpipev"
DESCRIPTION = "DualPipeV: two stages per GPU in a V, overlapped F/B pairs, partly split backward"
TRAITS = ScheduleTraits(placement=V_SHAPED, virtual_stages=TWO_STAGES, split_backward=True, fast_estimate=None)

Pair = tuple[Op, Op]


def rank_order(rank: int, n_gpus: int, n_mb: int) -> tuple[list[Op], list[Pair]]:
    """One GPU's compute order and its overlapped (F, B) pairs."""
    n = n_gpus
    c0, c1 = rank, 2 * n - 1 - rank
    count: dict[tuple[str, int], int] = defaultdict(int)  # a B takes the I counter, and counts as I and W
    w_queue: deque[tuple[int, int]] = deque()
    order: list[Op] = []
    pairs: list[Pair] = []

    def run(kind: str, stage: int) -> Op:
        mb = count[("I" if kind == "B" else kind, stage)]
        count[("I" if kind == "B" else kind, stage)] += 1
        if kind == "B":
            count[("W", stage)] += 1
        elif kind == "I":
            w_queue.append((stage, mb))
        order.append((kind, stage, mb))
        return order[-1]

    def queued_w() -> None:
        if w_queue:
            stage, mb = w_queue.popleft()
            order.append(("W", stage, mb))

    def overlapped(f_stage: int, b_stage: int) -> None:
        pairs.append((run("F", f_stage), run("B", b_stage)))

    for _ in range(2 * (n - rank - 1)):
        run("F", c0)
    for _ in range(rank + 1):
        run("F", c0)
        run("F", c1)
    for _ in range(n - rank - 1):
        run("I", c1)
        queued_w()
        run("F", c1)
    for i in range(n_mb - 2 * n + rank + 1):
        if i == 0 and rank == n - 1:  # the turn of the V: unpaired, so the bubble there shrinks
            run("F", c0)
            run("B", c1)
        else:
            overlapped(c0, c1)
        overlapped(c1, c0)
    for _ in range(n - rank - 1):
        run("B", c1)
        overlapped(c1, c0)
    split = False
    for i in range(rank + 1):
        middle = i == (rank + 1) // 2
        split |= middle and rank % 2 == 1
        run("I" if split else "B", c1)
        split |= middle and rank % 2 == 0
        run("I" if split else "B", c0)
    for _ in range(n - rank - 1):
        queued_w()
        run("I" if split else "B", c0)
    for _ in range(rank + 1):
        queued_w()
    return order, pairs


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    check_fixed_inputs(NAME, n_gpus, partition, n_mb, options, 2)
    require(n_mb >= 2 * n_gpus, f"{NAME}: n_mb must be >= 2 * n_gpus = {2 * n_gpus} (every GPU's V needs its "
                                f"own microbatches in flight, as torch ScheduleDualPipeV requires), got {n_mb}")
    orders = [rank_order(r, n_gpus, n_mb) for r in range(n_gpus)]
    overlapped = [[g, str(Action(*f, it)), str(Action(*b, it))]  # type: ignore[misc]
                  for it in range(options.n_iters) for g, (_, pairs) in enumerate(orders) for f, b in pairs]
    return compute_plan(NAME, n_gpus, n_mb, partition,
                        repeat_iterations([o for o, _ in orders], options.n_iters), options,
                        extra={"virtual_stages": 2, "overlapped": overlapped})
