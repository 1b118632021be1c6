"""What a schedule is, as data: every builder module declares TRAITS, and code outside rpsim.schedules
asks the traits (never the schedule's name) where stages live, how the optimizer steps, how many
virtual stages to use, which partitioners apply and how the search's fast estimate treats it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rpsim.ir import Plan

# Partitioner names, by the shape of partition they produce (rpsim.planner implements them).
FIXED_PARTITIONERS = ("uneven", "balanced", "even")  # symmetric, one range per stage
ROUNDPIPE_PARTITIONERS = ("roundpipe-paper", "roundpipe-library")  # asymmetric FWD|BWD, fused last stage


@dataclass(frozen=True)
class Placement:
    """Which GPU runs stage s of n_stages on n_gpus; `gpu_of` None: each job is dispatched to a GPU by
    the builder (stateless GPUs), so no stage has a home."""

    name: str
    gpu_of: Callable[[int, int, int], int] | None

    @property
    def fixed(self) -> bool:
        return self.gpu_of is not None


def _contiguous(stage: int, n_gpus: int, n_stages: int) -> int:
    return stage * n_gpus // n_stages  # one stage per GPU: stage s on GPU s


def _looped(stage: int, n_gpus: int, _n_stages: int) -> int:
    return stage % n_gpus  # Megatron's virtual stages: s, s + N, s + 2N, ... on GPU s mod N


def _v_shaped(stage: int, n_gpus: int, _n_stages: int) -> int:
    # Two stages per GPU folded into a V (torch generate_stage_to_rank_mapping style="v"): the first
    # half down the GPUs, the second half back up, so GPU g holds stages g and 2N - 1 - g.
    return stage if stage < n_gpus else 2 * n_gpus - 1 - stage


CONTIGUOUS = Placement("contiguous", _contiguous)
LOOPED = Placement("looped", _looped)
V_SHAPED = Placement("v-shaped", _v_shaped)
ROUND_ROBIN = Placement("round-robin", None)


@dataclass(frozen=True)
class VirtualStages:
    """Stages per GPU: `fixed` when the schedule runs exactly that many, else chosen (by --virtual-stages,
    the planner's default or the search) from `minimum` up."""

    fixed: int | None = 1
    minimum: int = 1  # the search's lowest count (interleaved at V = 1 is 1F1B); a user may ask for less

    def resolve(self, requested: int | None, default: int) -> int:
        if self.fixed is not None:
            return self.fixed
        return requested or default

    def choices(self, top: int) -> list[int]:
        """The counts the search tries, up to `top` (as many as the layers allow)."""
        if self.fixed is not None:
            return [self.fixed]
        return list(range(self.minimum, top + 1)) or [self.minimum]


ONE_STAGE = VirtualStages(fixed=1)
TWO_STAGES = VirtualStages(fixed=2)

# How search's fast evaluator estimates a plan: "fixed-fb" (rpsim.search.fast_fixed: F / B orders on
# stages bound to GPUs, one GPU hop per stage boundary), "round-robin" (rpsim.search.fast_roundpipe), or
# None: lower the plan and time it with the list-scheduling timer (rpsim.sim.list_timer).
FAST_FAMILIES = ("fixed-fb", "round-robin", None)


@dataclass(frozen=True)
class ScheduleTraits:
    placement: Placement
    optimizer: str = "sync"  # sync | async (the CPU step overlaps the next iteration, staleness 1)
    virtual_stages: VirtualStages = ONE_STAGE
    split_backward: bool = False  # emits I and W instead of (or besides) B
    fast_estimate: str | None = "fixed-fb"
    partitioners: tuple[str, ...] = FIXED_PARTITIONERS  # the first is the default
    # Search: also sweep explicit partitions (rpsim.search.sweep) at stage recompute.
    partition_sweep: bool = False
    # Search: the schedule whose default plan the best one is reported against.
    search_reference: bool = False
    # Async plans: the iterations over which a steady iteration time is averaged (the dispatch's period),
    # from (n_gpus, n_mb, stage slots per round, round size) before a plan is built, and from a built plan;
    # None: 1.
    steady_period: Callable[[int, int, int, int | None], int] | None = None
    plan_steady_period: Callable[[Plan], int] | None = None
    # Takes BuildOptions.defer_w (split backwards, W after each job's I passes); the search tries both.
    deferrable_w: bool = False

    def __post_init__(self) -> None:
        assert self.optimizer in ("sync", "async"), self.optimizer
        assert self.fast_estimate in FAST_FAMILIES, self.fast_estimate
        assert self.partitioners, "a schedule needs at least one partitioner"

    @property
    def stateless(self) -> bool:
        """Stages have no home GPU: weights stream per job, partitions may be asymmetric (FWD|BWD)."""
        return not self.placement.fixed

    @property
    def asymmetric_partition(self) -> bool:
        return self.partitioners[0] in ROUNDPIPE_PARTITIONERS
