"""RoundPipe's automated layer partitioner as the paper describes it (Luo et al., arXiv 2604.27085,
Sec. 4.4; roundpipe.md). The `roundpipe` library's own partitioner is rpsim.partition.library_auto.

Every stage is a contiguous layer range, so the largest stage time t_max is one of the O(L²) contiguous
sums of per-layer times. For each candidate t, stages are packed greedily from the last layer down
(rpsim.partition.greedy), each as full as time t and half the memory limit allow (the other half holds
the prefetched next stage): the fused last stage first (forward + backward, no recompute), then the
forward stages, then the backward stages (recompute + backward). Every candidate is tried and the
partition minimising (M·max(S, N) + N(N−1))·t_max wins (the paper writes M·S, which assumes S >= N); its
layers are then spread evenly over the same stage counts. Greedy packing uses prefix sums and binary
search: O(S log L) per candidate.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from rpsim.errors import Infeasible
from rpsim.ir import Partition
from rpsim.partition.greedy import MARGIN, contiguous_sums, prefix_sums, ranges
from rpsim.partition.greedy import pack as pack_greedy


@dataclass(frozen=True)
class LayerTimes:
    """Per pipeline layer (embed, transformer layers, head)."""

    forward_s: Sequence[float]
    backward_s: Sequence[float]  # without recompute
    recompute_s: Sequence[float]
    fwd_bytes: Sequence[float]  # GPU bytes a forward stage needs per layer (weights)
    bwd_bytes: Sequence[float]  # per layer in a backward stage: weights, gradients, recomputed activations


@dataclass(frozen=True)
class _Prefixes:
    fwd: list[float]
    bwd: list[float]  # recompute + backward
    fused: list[float]  # forward + backward
    fwd_mem: list[float]
    bwd_mem: list[float]

    @classmethod
    def of(cls, times: LayerTimes) -> _Prefixes:
        f, b, r = times.forward_s, times.backward_s, times.recompute_s
        return cls(prefix_sums(f), prefix_sums(x + y for x, y in zip(r, b, strict=True)),
                   prefix_sums(x + y for x, y in zip(f, b, strict=True)), prefix_sums(times.fwd_bytes),
                   prefix_sums(times.bwd_bytes))


def pack(times: LayerTimes, t: float, cap_bytes: float, pre: _Prefixes | None = None) -> Partition | None:
    """Every phase packed greedily from the top down within stage time t (rpsim.partition.greedy)."""
    pre = pre or _Prefixes.of(times)
    n = len(pre.fwd) - 1
    fused_cuts = pack_greedy(pre.fused, pre.bwd_mem, 0, n, t, cap_bytes, "down")
    if fused_cuts is None:
        return None
    start = fused_cuts[-2]  # only the topmost stage is fused
    if start == 0:
        return None  # the whole model in one fused stage: no pipeline left to partition
    fwd = pack_greedy(pre.fwd, pre.fwd_mem, 0, start, t, cap_bytes, "down")
    bwd = pack_greedy(pre.bwd, pre.bwd_mem, 0, start, t, cap_bytes, "down")
    if fwd is None or bwd is None:
        return None
    return Partition(fwd=ranges(fwd), bwd=ranges(bwd) + ((start, n),), fused=True)


def stage_times(p: Partition, times: LayerTimes) -> tuple[list[float], list[float]]:
    f, b, r = times.forward_s, times.backward_s, times.recompute_s
    fwd = [sum(f[a:c]) for a, c in p.fwd]
    bwd = [sum(r[a:c]) + sum(b[a:c]) for a, c in p.bwd[:-1]]
    a, c = p.bwd[-1]
    bwd.append(sum(f[a:c]) + sum(b[a:c]))
    return fwd, bwd


def candidates(times: LayerTimes) -> list[float]:
    """The distinct contiguous sums of forward, recompute + backward and forward + backward times, sorted,
    from the largest single-layer time W up. Plain Python, in the order numpy's cumsum adds
    (sequentially), so the floats are the ones the numpy version gave: importing numpy for this was a
    quarter of `rpsim compare`'s start-up."""
    f = [float(x) for x in times.forward_s]
    rb = [float(r) + float(b) for r, b in zip(times.recompute_s, times.backward_s, strict=True)]
    fb = [x + float(b) for x, b in zip(f, times.backward_s, strict=True)]
    return contiguous_sums((f, rb, fb), max(max(f), max(rb)))


def roundpipe_auto(times: LayerTimes, n_gpus: int, n_mb: int, memory_limit_bytes: float) -> Partition:
    """The partition minimising the paper's cost; raises Infeasible when no candidate fits memory."""
    cap = memory_limit_bytes / 2  # the next stage's weights are prefetched into the other half
    best: tuple[float, float, int, Partition] | None = None
    pre = _Prefixes.of(times)
    cand = candidates(times)
    i = 0
    while i < len(cand):
        t = cand[i]
        i += 1
        part = pack(times, t, cap, pre)
        if part is None:
            continue
        # Every candidate below the next time at which some greedy stage could take one more layer packs
        # to this same partition (same cost, and only a strictly better one replaces `best`): skip them.
        # The margin keeps the rounding of the packing's own comparisons on the evaluated side.
        i = max(i, bisect.bisect_left(cand, _next_change(part, pre, cap) * (1 - 1e-6)))
        fwd, bwd = stage_times(part, times)
        t_max = max(fwd + bwd)
        s = len(part.fwd) + len(part.bwd)
        # A round takes max(S, N) slot times, not S: with S < N stage slots, N - S GPUs sit idle each round,
        # so the paper's M·S (written for S >= N) would reward ever fewer, longer stages on a wide server.
        cost = (n_mb * max(s, n_gpus) + n_gpus * (n_gpus - 1)) * t_max
        key = (cost, t_max, s, part)
        if best is None or key[:3] < best[:3]:
            best = key
    if best is None:
        biggest = max(times.bwd_bytes)
        raise Infeasible(f"RoundPipe partitioner: no stage layout fits; the largest layer needs "
                         f"{biggest / 2**30:.2f} GiB in backward and a stage may use {cap / 2**30:.2f} GiB "
                         f"(half the memory limit, the other half prefetches)")
    return rebalance(best[3], times, cap)


def _next_change(part: Partition, pre: _Prefixes, cap: float) -> float:
    """Smallest stage time at which greedy packing would grow some stage of `part` by the layer below it
    (its time prefix-difference); stages held by memory or reaching layer 0 never grow."""
    start = part.bwd[-1][0]
    chains = ((pre.fused, pre.bwd_mem, (start, part.bwd[-1][1])),
              *((pre.fwd, pre.fwd_mem, r) for r in part.fwd), *((pre.bwd, pre.bwd_mem, r) for r in part.bwd[:-1]))
    nxt = float("inf")
    for prefix, mem, (lo, hi) in chains:
        if lo > 0 and mem[lo - 1] >= mem[hi] - cap * (1 + MARGIN):
            nxt = min(nxt, prefix[hi] - prefix[lo - 1])
    return nxt


def rebalance(p: Partition, times: LayerTimes, cap_bytes: float) -> Partition:
    """Same stage counts, layers spread as evenly as the costs allow: greedy packing leaves a runt
    stage (9,9,9,1); the paper's partitions are smooth (7,7,7,7). Minimises each phase's largest
    stage time, then the sum of squared stage times."""
    start = p.bwd[-1][0]
    f = list(times.forward_s)
    rb = [x + y for x, y in zip(times.recompute_s, times.backward_s, strict=True)]
    fwd = smooth_cuts(f[:start], list(times.fwd_bytes[:start]), len(p.fwd), cap_bytes)
    bwd = smooth_cuts(rb[:start], list(times.bwd_bytes[:start]), len(p.bwd) - 1, cap_bytes)
    if fwd is None or bwd is None:
        return p
    return Partition(fwd=ranges(fwd), bwd=ranges(bwd) + (p.bwd[-1],), fused=True)


def smooth_cuts(cost: list[float], mem: list[float], k: int, cap: float) -> list[int] | None:
    """Linear partition of `cost` into k contiguous non-empty parts, lexicographic (max, sum of squares)."""
    n = len(cost)
    pc = [0.0]
    pm = [0.0]
    for c, m in zip(cost, mem, strict=True):
        pc.append(pc[-1] + c)
        pm.append(pm[-1] + m)
    inf = (float("inf"), float("inf"))
    best = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    best[0][0] = (0.0, 0.0)
    for s in range(1, k + 1):
        for j in range(s, n - (k - s) + 1):
            for i in range(s - 1, j):
                if best[s - 1][i] == inf or pm[j] - pm[i] > cap * (1 + 1e-12):
                    continue
                c = pc[j] - pc[i]
                key = (max(best[s - 1][i][0], round(c, 12)), best[s - 1][i][1] + c * c)
                if key < best[s][j]:
                    best[s][j], cut[s][j] = key, i
    if best[k][n] == inf:
        return None
    cuts, j = [n], n
    for s in range(k, 0, -1):
        j = cut[s][j]
        cuts.append(j)
    return cuts[::-1]
