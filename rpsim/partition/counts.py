"""Layer counts <-> stage ranges, and the `--partition` grammar (architecture.md, "CLI contract").

Counts are over transformer layers. Fixed placement: `7,7,7,7`, the embedding joins the first stage
and the head the last. RoundPipe: `FWD|BWD`, forward counts shallow -> deep; backward counts in
execution order (deep -> shallow), the first being the transformer layers fused with the head.
"""
from __future__ import annotations

from collections.abc import Sequence

from rpsim.errors import SpecError
from rpsim.ir import Partition

GRAMMAR = ("--partition takes layer counts over the transformer layers: '7,7,7,7' for fixed-placement "
           "schedules, or 'FWD|BWD' for RoundPipe, e.g. '7,7,7,7|0,3,3,3,3,3,3,3,3,2,2' (backward in "
           "execution order, the first entry being the layers fused with the head)")


def _ranges_from_counts(counts: Sequence[int], first_extra: int, last_extra: int, start: int = 0
                        ) -> tuple[tuple[int, int], ...]:
    """Contiguous ranges of pipeline layers; the first range takes `first_extra` extra layers (embedding),
    the last `last_extra` (head)."""
    sizes = list(counts)
    sizes[0] += first_extra
    sizes[-1] += last_extra
    out, pos = [], start
    for size in sizes:
        out.append((pos, pos + size))
        pos += size
    return tuple(out)


def fixed_partition(counts: Sequence[int], n_layers: int) -> Partition:
    if sum(counts) != n_layers or any(c < 0 for c in counts):
        raise SpecError(f"--partition {','.join(map(str, counts))} sums to {sum(counts)} transformer layers; "
                        f"the model has {n_layers}")
    ranges = _ranges_from_counts(counts, 1, 1)
    if any(b <= a for a, b in ranges):
        raise SpecError(f"--partition {','.join(map(str, counts))}: every stage needs at least one layer")
    return Partition.same(ranges)


def roundpipe_partition(fwd_counts: Sequence[int], bwd_counts_exec: Sequence[int], n_layers: int) -> Partition:
    fused_layers = bwd_counts_exec[0]
    if sum(fwd_counts) + fused_layers != n_layers:
        raise SpecError(f"--partition: forward counts ({sum(fwd_counts)}) plus the fused stage's "
                        f"{fused_layers} must equal the model's {n_layers} transformer layers")
    if sum(bwd_counts_exec) != n_layers:
        raise SpecError(f"--partition: backward counts sum to {sum(bwd_counts_exec)}; the model has {n_layers}")
    if any(c < 1 for c in fwd_counts) or any(c < 1 for c in bwd_counts_exec[1:]) or fused_layers < 0:
        raise SpecError("--partition: every forward and non-fused backward stage needs at least one layer")
    fwd = _ranges_from_counts(fwd_counts, 1, 0) if fwd_counts else ()
    bwd_layer_order = list(reversed(bwd_counts_exec))  # shallow -> deep; the fused stage is last
    bwd = _ranges_from_counts(bwd_layer_order, 1, 1)
    return Partition(fwd=fwd, bwd=bwd, fused=True)


def parse_partition_spec(text: str, n_layers: int, roundpipe: bool) -> Partition:
    try:
        parts = [[int(x) for x in side.split(",") if x.strip()] for side in text.split("|")]
    except ValueError:
        raise SpecError(f"--partition {text!r} is malformed; {GRAMMAR}") from None
    if roundpipe:
        if len(parts) != 2 or not parts[1]:
            raise SpecError(f"--partition {text!r}: RoundPipe needs 'FWD|BWD'; {GRAMMAR}")
        return roundpipe_partition(parts[0], parts[1], n_layers)
    if len(parts) != 1 or not parts[0]:
        raise SpecError(f"--partition {text!r}: fixed-placement schedules take one list of counts; {GRAMMAR}")
    return fixed_partition(parts[0], n_layers)


def partition_to_spec(p: Partition) -> str:
    """Inverse of parse_partition_spec (round-trips for partitions it can express)."""
    n_pipeline = p.n_layers

    def counts(ranges: Sequence[tuple[int, int]]) -> list[int]:
        return [sum(1 for layer in range(a, b) if 0 < layer < n_pipeline - 1) for a, b in ranges]

    if not p.fused:
        return ",".join(map(str, counts(p.fwd)))
    return ",".join(map(str, counts(p.fwd))) + "|" + ",".join(map(str, reversed(counts(p.bwd))))
