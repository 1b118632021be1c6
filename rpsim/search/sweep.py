"""A stage-count sweep for RoundPipe partitions (ours): for given numbers of forward and backward stages
and layers fused with the head, cut the layers at the quantiles of their cumulative time, forward stages
by forward time and backward stages by recompute + backward time. RoundPipe's own partitioner fixes the
stage count by its cost formula; with stateless GPUs any count runs, and fewer, larger stages load fewer
weights per microbatch while more, smaller ones pipeline better. The sweep covers that trade-off
coarsely; the local search (rpsim.partition.local_search) refines the best layouts. Pure."""
from __future__ import annotations

import bisect
import itertools

from rpsim.errors import SpecError
from rpsim.ir import Partition
from rpsim.partition.counts import roundpipe_partition
from rpsim.scenario import Scenario

STAGE_COUNTS = (1, 2, 4, 8, 16, 32, 64)
PREFIX = "sweep"


def fused_options(n_layers: int) -> list[int]:
    """Transformer layers fused with the head: none or a few (RoundPipe's choice), or an eighth, a
    quarter, half of the model (a short pipeline whose fused stage skips recomputation)."""
    return sorted({0, 1, 2, n_layers // 8, n_layers // 4, n_layers // 2})


def sweep_names(n_layers: int) -> list[str]:
    """Partitioner names `sweep:F:B:X` (F forward stages, B backward stages besides the fused one, X
    transformer layers fused with the head) that fit the model's layers."""
    return [f"{PREFIX}:{f}:{b}:{x}" for x in fused_options(n_layers) for f in STAGE_COUNTS
            for b in STAGE_COUNTS if f <= n_layers - x and b <= n_layers - x]


def quantile_counts(costs: list[float], k: int) -> list[int]:
    """k contiguous groups of at least one item each, cut where the running cost crosses j/k of the total."""
    n = len(costs)
    if not 1 <= k <= n:
        raise SpecError(f"cannot cut {n} layers into {k} stages")
    prefix = [0.0, *itertools.accumulate(costs)]
    total, cuts = prefix[-1], [0]
    for j in range(1, k):
        x = bisect.bisect_left(prefix, total * j / k)
        if x > 0 and abs(prefix[x - 1] - total * j / k) <= abs(prefix[min(x, n)] - total * j / k):
            x -= 1
        cuts.append(min(max(x, cuts[-1] + 1), n - (k - j)))
    cuts.append(n)
    return [b - a for a, b in itertools.pairwise(cuts)]


def sweep_partition(sc: Scenario, name: str) -> Partition:
    try:
        _, f, b, x = name.split(":")
        n_fwd, n_bwd, fused = int(f), int(b), int(x)
    except ValueError:
        raise SpecError(f"partitioner {name!r}: expected "
                        f"{PREFIX}:FWD_STAGES:BWD_STAGES:FUSED_LAYERS") from None
    layers = sc.costs.layers[1:-1]  # transformer layers; the embedding joins the first stage
    rest = len(layers) - fused
    fwd = quantile_counts([c.forward_s for c in layers[:rest]], n_fwd)
    bwd = quantile_counts([c.recompute_s + c.backward_s for c in layers[:rest]], n_bwd)
    return roundpipe_partition(fwd, [fused, *reversed(bwd)], len(layers))
