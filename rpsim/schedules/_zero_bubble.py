"""The zero-bubble 1F1B order with split backward (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024),
shared by ZB-H1 (one stage per GPU) and interleaved zero bubble (V stages per GPU, torch
ScheduleInterleavedZeroBubble). Each GPU runs its forwards and input-gradient passes (I) in Megatron's
interleaved table, one F then one I in the steady state, and delays each weight-gradient pass (W): GPU r
starts issuing one W after each I only once it has run r I passes, then drains the rest. W passes fill
the bubbles 1F1B leaves at the end (the last GPU, which finishes first, keeps N - 1 of them for last),
at 1F1B's activation memory for the stage input plus what each deferred W holds."""
from __future__ import annotations

from collections import defaultdict

from rpsim.schedules._fixed import Op
from rpsim.schedules.interleaved import _table, group_sizes


def rank_order(rank: int, n_gpus: int, virtual_stages: int, n_mb: int) -> list[Op]:
    sizes = group_sizes(n_gpus, n_mb)
    fwd = [c * n_gpus + rank for c, _m in _table(sizes, range(virtual_stages))]
    bwd = [c * n_gpus + rank for c, _m in _table(sizes, reversed(range(virtual_stages)))]
    # Warm-up: the first group through V - 1 local stages, plus one per hop to the last GPU (an I
    # follows its F on the last stage at once, so a hop costs one forward, not 1F1B's two).
    warmup = min((virtual_stages - 1) * sizes[0] + (n_gpus - 1 - rank), len(fwd))
    next_mb: dict[tuple[str, int], int] = defaultdict(int)

    def op(kind: str, stage: int) -> tuple[str, int, int]:
        mb = next_mb[(kind, stage)]
        next_mb[(kind, stage)] += 1
        return (kind, stage, mb)

    order = [op("F", s) for s in fwd[:warmup]]
    w_done = 0
    for j, stage in enumerate(bwd):
        if warmup + j < len(fwd):
            order.append(op("F", fwd[warmup + j]))
        order.append(op("I", stage))
        if j >= rank:  # GPU r holds r W passes back for the drain
            order.append(op("W", bwd[w_done]))
            w_done += 1
    order += [op("W", s) for s in bwd[w_done:]]
    return order
