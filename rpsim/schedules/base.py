"""The one builder signature and its options. A builder is compute-only: it places F / B / FB / I / W
actions on each GPU's `compute` lane. Lowering passes (rpsim.passes) add every transfer afterwards."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rpsim.errors import SpecError
from rpsim.ir import Action, Partition, Plan


@dataclass(frozen=True)
class BuildOptions:
    virtual_stages: int = 1  # interleaved / looped-bfs: stages per GPU (partition has n_gpus * V stages)
    round_size: int | None = None  # RoundPipe: microbatches per round (M_R >= N); None = n_gpus
    g0_rule: str = "paper"  # RoundPipe: "paper" (g0 += S) or "earliest-free"
    n_iters: int = 1  # iterations in the plan; async schedules use >= 3 for a steady state
    optimizer: str = "sync"  # sync | async
    recompute: str = "stage"  # none | stage | layer
    # Per-stage compute-time estimates (s), only for RoundPipe's earliest-free rule.
    fwd_stage_s: Sequence[float] | None = None
    bwd_stage_s: Sequence[float] | None = None
    hop_s: float = 0.0
    # RoundPipe: split each backward job into its I passes, then its W passes on the same GPU before
    # its next job, so the next stage's gradient leaves after I and W fills the wait for the next job.
    defer_w: bool = False


Builder = Callable[[int, Partition, int, BuildOptions], Plan]


def compute_plan(name: str, n_gpus: int, n_mb: int, partition: Partition, per_gpu: Sequence[Sequence[Action]],
                 options: BuildOptions, extra: dict | None = None) -> Plan:
    """Wrap per-GPU compute orders into a Plan (the common tail of every builder)."""
    lanes = {(g, "compute"): tuple(actions) for g, actions in enumerate(per_gpu)}
    return Plan(schedule=name, n_gpus=n_gpus, n_mb=n_mb, partition=partition, lanes=lanes,
                n_iters=options.n_iters, recompute=options.recompute, optimizer=options.optimizer,
                level="compute", options={"virtual_stages": options.virtual_stages, **(extra or {})})


def require(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)
