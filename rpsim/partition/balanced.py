"""Cost-aware fixed-placement partitions: the min-max balanced split, and the baseline convention of
fewer transformer layers on the first and last stage when the embedding or head is heavy
(Megatron-LM's --decoder-first/last-pipeline-num-layers; the RoundPipe paper's Megatron PP=8 runs)."""
from __future__ import annotations

from collections.abc import Sequence

from rpsim.errors import SpecError


def balanced_counts(layer_s: Sequence[float], n_stages: int) -> list[int]:
    """Split pipeline layers (embed, L transformer layers, head) into contiguous stages minimising the
    largest stage time; every stage gets at least one transformer layer. Dynamic programming over
    prefixes, O(stages · L²) (the classic linear-partition problem; Skiena, Algorithm Design Manual 8.5)."""
    n = len(layer_s) - 2
    if n_stages < 1 or n_stages > n:
        raise SpecError(f"cannot split {n} transformer layers into {n_stages} non-empty stages")
    prefix = [0.0]
    for t in layer_s:
        prefix.append(prefix[-1] + t)

    def cost(a: int, b: int) -> float:  # stage holding transformer layers a..b-1 (1-based pipeline idx)
        lo = 0 if a == 1 else a
        hi = n + 2 if b == n + 1 else b
        return prefix[hi] - prefix[lo]

    inf = float("inf")
    # best[k][j]: minimal max stage time placing transformer layers 1..j-1 into k stages
    best = [[inf] * (n + 2) for _ in range(n_stages + 1)]
    cut = [[0] * (n + 2) for _ in range(n_stages + 1)]
    best[0][1] = 0.0
    for k in range(1, n_stages + 1):
        for j in range(k + 1, n + 2):
            for i in range(k, j):
                v = max(best[k - 1][i], cost(i, j))
                if v < best[k][j] - 1e-15:
                    best[k][j], cut[k][j] = v, i
    counts, j = [], n + 1
    for k in range(n_stages, 0, -1):
        i = cut[k][j]
        counts.append(j - i)
        j = i
    return counts[::-1]


def baseline_uneven_counts(layer_s: Sequence[float], n_stages: int) -> list[int]:
    """Middle stages even; the first and last give up as many layers as the embedding / head cost."""
    n = len(layer_s) - 2
    if n_stages < 1 or n_stages > n:
        raise SpecError(f"cannot split {n} transformer layers into {n_stages} non-empty stages")
    if n_stages == 1:
        return [n]
    typical = sorted(layer_s[1:-1])[n // 2] or 1.0
    r_first, r_last = round(layer_s[0] / typical), round(layer_s[-1] / typical)
    virtual = n + r_first + r_last
    q = virtual // n_stages
    first, last = max(1, q - r_first), max(1, q - r_last)
    middle_total = n - first - last
    if n_stages == 2 or middle_total < n_stages - 2:
        from rpsim.partition.even import even_counts
        return even_counts(n, n_stages)
    base, extra = divmod(middle_total, n_stages - 2)
    middle = [base + (1 if i < extra else 0) for i in range(n_stages - 2)]
    return [first, *middle, last]
