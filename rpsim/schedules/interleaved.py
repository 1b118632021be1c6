"""Interleaved 1F1B (Narayanan et al. 2021; Megatron-LM, torch ScheduleInterleaved1F1B): V stages per GPU,
stage s on GPU s % N. Forwards follow Megatron's schedule table (groups of microbatches, every local stage
per group), backwards the same table with the stages reversed; warm-up, then one F / one B, then drain."""
from __future__ import annotations

from collections.abc import Iterable

from rpsim.ir import Partition, Plan
from rpsim.schedules._fixed import Op, check_fixed_inputs, repeat_iterations
from rpsim.schedules.base import BuildOptions, compute_plan
from rpsim.schedules.traits import LOOPED, ScheduleTraits, VirtualStages

NAME = "interleaved"
DESCRIPTION = "Interleaved 1F1B: V stages per GPU, depth-first over microbatch groups, flush each iteration"
# V = 1 would be 1F1B: the search starts at 2.
TRAITS = ScheduleTraits(placement=LOOPED, virtual_stages=VirtualStages(fixed=None, minimum=2))


def group_sizes(n_gpus: int, n_mb: int) -> list[int]:
    """Microbatches per group. torch: max(1, M // N) rounds of M / rounds each, and it rejects M that the
    rounds do not divide. We split M over the same rounds as evenly as possible, larger groups first: a
    shorter group first (or Megatron's short last group with a full group's warm-up) can deadlock; where
    torch accepts M the groups are equal and the order is torch's."""
    rounds = max(1, n_mb // n_gpus)
    size, extra = divmod(n_mb, rounds)
    return [size + 1] * extra + [size] * (rounds - extra)


def _table(sizes: list[int], chunks: Iterable[int]) -> list[tuple[int, int]]:
    """(local stage, mb) in execution order: each group runs every chunk over its microbatches."""
    order = list(chunks)
    table: list[tuple[int, int]] = []
    start = 0
    for size in sizes:
        table += [(c, m) for c in order for m in range(start, start + size)]
        start += size
    return table


def rank_order(rank: int, n_gpus: int, virtual_stages: int, n_mb: int) -> list[Op]:
    sizes = group_sizes(n_gpus, n_mb)
    fwd = [("F", c * n_gpus + rank, m) for c, m in _table(sizes, range(virtual_stages))]
    bwd = [("B", c * n_gpus + rank, m) for c, m in _table(sizes, reversed(range(virtual_stages)))]
    # Megatron's warm-up: the first group through V - 1 local stages, plus 2 per hop to the last rank.
    warmup = min((virtual_stages - 1) * sizes[0] + 2 * (n_gpus - 1 - rank), len(fwd))
    order = fwd[:warmup]
    for k in range(warmup, len(fwd)):
        order += [fwd[k], bwd[k - warmup]]
    return order + bwd[len(fwd) - warmup:]


def build(n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions) -> Plan:
    v = options.virtual_stages
    check_fixed_inputs(NAME, n_gpus, partition, n_mb, options, v)
    per_gpu = [rank_order(r, n_gpus, v, n_mb) for r in range(n_gpus)]
    return compute_plan(NAME, n_gpus, n_mb, partition, repeat_iterations(per_gpu, options.n_iters), options)
