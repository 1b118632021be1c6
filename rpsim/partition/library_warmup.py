"""The partition the `roundpipe` library runs its first iterations with, before it has measured any time.

roundpipe 0.1.1 (timer.py, ModelTimer) starts from size-based estimates: each layer's forward and
recompute "time" is its parameter and buffer bytes and its backward twice that; it drops the first
measured iteration, so at least the first two iterations of a run are planned from these estimates
(the artifact's runs warm up for 5). The plan (scheduler.py, ModelExecutePlan.auto, run type "fused")
is then the library's usual greedy: W is the largest single-layer estimate, the candidate stage budgets
are the contiguous sums of the forward or the recompute + backward estimates within [W, 1.1 W], and for
each budget the fused last stage takes layers from the top while their recompute + backward estimates
fit, the forward stages are packed greedily from the fused stage down and the backward stages from the
first layer up, each also limited to half of 0.6 x the GPU's memory in weights (weights and gradients
for backward stages); the budget with the least max(stages, GPUs) x budget wins (the first of equals).
No rebalancing follows: the top forward stage is the fullest.

In time units this partition makes no sense (the head's weights make it the "slowest" layer), but it is
what runs while the timer warms up, so its memory must fit too: see rpsim.costs.library_memory.
"""
from __future__ import annotations

from collections.abc import Sequence

from rpsim.ir import Partition

UPPER_THRESHOLD = 1.1  # ModelExecutePlan.auto's default upper_threshold
MEMORY_SHARE = 0.6  # its default model_memory_limit: 0.6 x the smallest GPU's memory
BACKWARD_MULTIPLIER = 2  # ModelTimer.BACKWARD_MULTIPLIER: backward = 2 x forward before any timing


def _greedy(order: Sequence[int], cost: Sequence[float], size: Sequence[float], budget: float,
            cap: float) -> list[list[int]]:
    """Stages of consecutive layers in `order`, a new one whenever the next layer would exceed the time
    budget or the size cap (the library starts from an 'infinite' stage, so the first layer opens one)."""
    stages: list[list[int]] = []
    total = used = float("inf")
    for i in order:
        if total + cost[i] > budget or used + size[i] > cap:
            stages.append([])
            total = used = 0.0
        stages[-1].append(i)
        total += cost[i]
        used += size[i]
    return stages


def _ranges(stages: list[list[int]]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted((min(s), max(s) + 1) for s in stages))


def library_warmup_partition(weight_bytes: Sequence[float], grad_bytes: Sequence[float], n_gpus: int,
                             gpu_memory_bytes: float) -> Partition:
    """The library's first-iterations partition of pipeline layers (embed, transformer layers, head) with
    these fp16 weight and gradient bytes, on `n_gpus` GPUs of `gpu_memory_bytes` each."""
    n = len(weight_bytes)
    fwd = [float(w) for w in weight_bytes]  # the recompute estimate, which the plan uses for forward stages
    bwd = [(1 + BACKWARD_MULTIPLIER) * w for w in fwd]  # recompute + backward
    # The library's limit is in GiB and its layer sizes in units of 1e9 bytes (utils.get_model_size / 1e9
    # against device.get_min_gpu_memory in 1024**3): compared as those two numbers.
    size_f = [w / 1e9 for w in fwd]
    size_b = [(w + g) / 1e9 for w, g in zip(weight_bytes, grad_bytes, strict=True)]
    limit = MEMORY_SHARE * gpu_memory_bytes / 2**30
    limit = max(limit, 2 * max(size_b))  # the library raises the limit (with a warning) to fit its largest layer
    cap = limit / 2
    w_max = max(max(fwd), max(bwd))
    budgets: set[float] = set()
    for cost in (fwd, bwd):
        for start in range(n):
            total = 0.0
            for end in range(start, n):
                total += cost[end]
                if total > w_max * UPPER_THRESHOLD:
                    break
                if total >= w_max:
                    budgets.add(total)
    best: tuple[float, Partition] | None = None
    for budget in sorted(budgets):
        layer_end, fused_total, fused_size = n, 0.0, 0.0
        for i in range(n - 1, -1, -1):
            if fused_total + bwd[i] > budget or fused_size + size_b[i] > cap:
                break
            fused_total += bwd[i]
            fused_size += size_b[i]
            layer_end = i
        fwd_stages = _greedy(range(layer_end - 1, -1, -1), fwd, size_f, budget, cap)
        bwd_stages = _greedy(range(layer_end), bwd, size_b, budget, cap)
        cost = max(len(fwd_stages) + len(bwd_stages) + 1, n_gpus) * budget
        if best is None or cost < best[0]:
            best = (cost, Partition(fwd=_ranges(fwd_stages), bwd=_ranges(bwd_stages) + ((layer_end, n),), fused=True))
    assert best is not None  # the largest single layer's estimate is always a candidate
    return best[1]
