"""Shared checks and the iteration repeat for fixed-placement schedules (stage s lives on GPU s % n_gpus).
Pure helpers for builders; imports only the IR and base."""
from __future__ import annotations

from collections.abc import Sequence

from rpsim.ir import Action, Partition
from rpsim.schedules.base import BuildOptions, require

Op = tuple[str, int, int]  # (kind, stage, mb) of one iteration


def check_fixed_inputs(name: str, n_gpus: int, partition: Partition, n_mb: int, options: BuildOptions,
                       virtual_stages: int = 1) -> None:
    """Reject inputs a weight-bound schedule cannot run, naming the field, the value and what is valid."""
    require(n_gpus >= 1, f"{name}: n_gpus must be >= 1, got {n_gpus}")
    require(n_mb >= 1, f"{name}: n_mb must be >= 1, got {n_mb}")
    require(options.n_iters >= 1, f"{name}: options.n_iters must be >= 1, got {options.n_iters}")
    require(virtual_stages >= 1, f"{name}: options.virtual_stages must be >= 1, got {virtual_stages}")
    # Forward and backward of a stage share its weights on one GPU, so both partitions must coincide.
    require(partition.symmetric, f"{name}: partition must be symmetric (fwd == bwd, fused=False), got "
                                 f"fwd={list(partition.fwd)}, bwd={list(partition.bwd)}, fused={partition.fused}")
    expected = n_gpus * virtual_stages
    require(len(partition.bwd) == expected,
            f"{name}: partition has {len(partition.bwd)} stages; expected n_gpus * virtual_stages = "
            f"{n_gpus} * {virtual_stages} = {expected}")


def repeat_iterations(per_gpu: Sequence[Sequence[Op]], n_iters: int) -> list[list[Action]]:
    """Each iteration flushes, so iteration `it` is the same order again with Action.it = it."""
    return [[Action(kind, stage, mb, it) for it in range(n_iters) for kind, stage, mb in ops] for ops in per_gpu]
