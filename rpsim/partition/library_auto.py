"""The `roundpipe` library's own partitioner (roundpipe 0.1.1, scheduler.py, ModelExecutePlan.auto, run type
"fused", which `RoundPipe.forward_backward` calls when no plan is given), fed either the per-layer times
its timer has measured or, before it has any, its size-based estimates.

The algorithm, from the source (line numbers of scheduler.py):
- Estimates (timer.py, ModelTimer.get_estimate): per layer, a forward cost, the timer's *recompute*
  estimate ("re": forward stages are packed by the recompute time, not the forward), and a backward
  cost, recompute + backward ("re" + "bwd"). Before the timer has two iterations of events (it drops
  the first) both come from sizes: "re" is the layer's parameter and buffer bytes, "bwd" twice that.
- Sizes (166-175): a forward stage holds the layers' parameter and buffer bytes, a backward stage also
  their gradients; in units of 1e9 bytes (roundpipe.py, `layer_size`), compared against a limit in GiB
  (device.py, get_min_gpu_memory; the default limit is 0.6 of it). Half the limit per stage (the other
  half prefetches the next stage); if one layer needs more, the limit is raised to fit it, with a
  warning, instead of failing (176-183).
- Candidate budgets (185-196): W is the largest single-layer cost of either kind; the budgets are the
  contiguous sums of forward or of backward costs within [W, 1.1 W] (`upper_threshold`).
- Packing per budget (231-285): the fused last stage takes layers from the top while their backward
  costs and sizes fit; the forward stages are packed greedily from the fused stage down and the backward
  stages greedily from the first layer up (a new stage when the next layer would pass the budget or the
  size cap). No rebalancing follows: the runt stage sits at the bottom of the forward phase and at the
  top of the backward phase.
- Choice (289-292): the least max(stages, `min_stages` = GPUs) x budget, the first (smallest budget) of
  equals; the budget, not the packed stages' largest time.

Not modelled: a budget whose fused stage swallows the whole model (the library then runs one fused stage
and no pipeline; rpsim's plans need a forward stage) is skipped; the limit uses the GPU's whole memory
where the library reads the free memory at import (its total less the CUDA context).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rpsim.errors import Infeasible
from rpsim.ir import Partition
from rpsim.partition.greedy import contiguous_sums, pack, prefix_sums, ranges
from rpsim.partition.roundpipe_auto import LayerTimes

UPPER_THRESHOLD = 1.1  # ModelExecutePlan.auto's default upper_threshold
MODEL_MEMORY_SHARE = 0.6  # its default model_memory_limit: 0.6 x the smallest GPU's memory
BACKWARD_MULTIPLIER = 2  # ModelTimer.BACKWARD_MULTIPLIER: backward = 2 x forward before any timing
# A limit of L bytes is the figure L / 2**30 (GiB), compared with sizes / 1e9 (GB): it admits L x this bytes.
LIMIT_READ_AS_GB = 1e9 / 2**30


def stage_byte_cap(memory_limit_bytes: float, bwd_bytes: Sequence[float]) -> float:
    """Bytes one stage may hold: half the limit, read as GB where the library reads GiB, raised to the
    largest layer's backward bytes when that is more (the library's warning, not a failure)."""
    return max(memory_limit_bytes * LIMIT_READ_AS_GB, 2 * max(bwd_bytes)) / 2


@dataclass(frozen=True)
class LibraryEstimates:
    """Per layer, what ModelExecutePlan.auto reads: costs in the timer's unit (ms, or bytes before any
    timing) and stage bytes."""

    fwd_cost: Sequence[float]  # the "re" estimate
    bwd_cost: Sequence[float]  # "re" + "bwd"
    fwd_bytes: Sequence[float]  # parameters and buffers
    bwd_bytes: Sequence[float]  # and their gradients

    def budgets(self) -> list[float]:
        """Candidate stage budgets: contiguous sums of either cost within [W, 1.1 W]."""
        w = max(max(self.fwd_cost), max(self.bwd_cost))
        return contiguous_sums((self.fwd_cost, self.bwd_cost), w, UPPER_THRESHOLD * w)


def pack_for_budget(est: LibraryEstimates, budget: float, cap_bytes: float) -> Partition | None:
    """The library's greedy packing at one budget: the fused stage from the top, forward stages from it
    down, backward stages from the first layer up. None where rpsim cannot run it (module docstring)."""
    n = len(est.fwd_cost)
    bwd_pre, bwd_mem = prefix_sums(est.bwd_cost), prefix_sums(est.bwd_bytes)
    fused = pack(bwd_pre, bwd_mem, 0, n, budget, cap_bytes, "down")
    if fused is None or fused[-2] == 0:
        return None
    start = fused[-2]  # only the topmost stage is fused
    fwd = pack(prefix_sums(est.fwd_cost), prefix_sums(est.fwd_bytes), 0, start, budget, cap_bytes, "down")
    bwd = pack(bwd_pre, bwd_mem, 0, start, budget, cap_bytes, "up")
    if fwd is None or bwd is None:
        return None
    return Partition(fwd=ranges(fwd), bwd=ranges(bwd) + ((start, n),), fused=True)


def library_partition(est: LibraryEstimates, n_gpus: int, memory_limit_bytes: float) -> Partition:
    """The library's plan for these estimates; `memory_limit_bytes` is its model_memory_limit (default
    MODEL_MEMORY_SHARE x GPU memory). The least max(stages, GPUs) x budget, the first of equals."""
    cap = stage_byte_cap(memory_limit_bytes, est.bwd_bytes)
    best: tuple[float, Partition] | None = None
    for budget in est.budgets():
        part = pack_for_budget(est, budget, cap)
        if part is None:
            continue
        cost = max(len(part.fwd) + len(part.bwd), n_gpus) * budget
        if best is None or cost < best[0]:
            best = (cost, part)
    if best is None:
        raise Infeasible("the roundpipe library's partitioner: no budget leaves a forward stage below the "
                         "fused one (the whole model fits one fused stage)")
    return best[1]


def library_timed_partition(times: LayerTimes, n_gpus: int, memory_limit_bytes: float) -> Partition:
    """The plan once the library's timer has measured these layer times: forward stages by the recompute
    time, backward and fused stages by recompute + backward."""
    rb = [r + b for r, b in zip(times.recompute_s, times.backward_s, strict=True)]
    est = LibraryEstimates(times.recompute_s, rb, times.fwd_bytes, times.bwd_bytes)
    return library_partition(est, n_gpus, memory_limit_bytes)


def library_warmup_partition(weight_bytes: Sequence[float], grad_bytes: Sequence[float], n_gpus: int,
                             gpu_memory_bytes: float) -> Partition:
    """The plan the library runs its first iterations with, before its timer has measured any (it drops
    the first measured iteration, so at least two; the artifact's runs warm up for 5): the estimates are
    layer bytes. In time units this makes no sense (the head's weights make it the "slowest" layer), but it
    is what runs while the timer warms up, so its memory must fit too: see rpsim.costs.library_memory."""
    fwd = [float(w) for w in weight_bytes]
    bwd = [(1 + BACKWARD_MULTIPLIER) * w for w in fwd]
    bwd_bytes = [w + g for w, g in zip(fwd, grad_bytes, strict=True)]
    return library_partition(LibraryEstimates(fwd, bwd, fwd, bwd_bytes), n_gpus, MODEL_MEMORY_SHARE * gpu_memory_bytes)
