"""Iterations in which a host pool outgrew its presizing: one-off work, so not steady.

Why: with the asynchronous optimizer the gradient downloads wait in pinned host memory until their STEP
sums them, and when the STEP runs slower than the prediction the warm-up sized the pool from, the pool
pins new 1 GiB slabs inside the run (cudaHostAlloc pages in every byte: 0.5-1.0 s per slab in session
16's 2.8B runs on the lent H200 host, logged in `meta.pool_slabs`). In session 15's one-H200 RoundPipe runs the gradient pool grew by 0.4-25 GB inside the run, and in
those runs LOADs started 0.4-0.8 s after their last dependency had finished (llama-0.7b: one 567 ms stall
in a 1.0-1.5 s iteration), where a LOAD otherwise starts within 1 ms. A long training run pays the growth
once; a run of a few iterations pays it in the iterations it measures, so rpexec records each slab made
inside the run (`meta.pool_slabs`) and leaves the iterations it fell in out of `meta.steady_iterations`,
as long as one steady iteration remains (`meta.pool_growth_iterations` names them either way).
"""
from __future__ import annotations

from collections.abc import Iterable


def slabs_in_run(slab_log: Iterable[tuple[float, float, int]], t0_s: float) -> list[list[float]]:
    """[start_s from the run's zero, seconds, bytes] of the slabs a pool made from `t0_s` (perf_counter) on."""
    return [[start - t0_s, seconds, n_bytes] for start, seconds, n_bytes in slab_log if start >= t0_s]


def growth_iterations(steady: list[int], ends_s: dict[int, float], slab_starts_s: list[float]) -> list[int]:
    """The iterations of `steady` during whose span (the previous iteration's end to its own) a slab was made."""
    grew = []
    for i in steady:
        if i - 1 not in ends_s or i not in ends_s:
            continue
        if any(ends_s[i - 1] < t <= ends_s[i] for t in slab_starts_s):
            grew.append(i)
    return grew


def without_growth(steady: list[int], grew: list[int]) -> list[int]:
    """`steady` less the iterations that grew a pool, unless that leaves none."""
    kept = [i for i in steady if i not in grew]
    return kept or steady
