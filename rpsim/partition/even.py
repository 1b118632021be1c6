"""Even split of transformer layers over stages; leftover layers go to the stages nearest the middle,
away from the first (embedding) and last (head) stages."""
from __future__ import annotations

from rpsim.errors import SpecError


def even_counts(n_layers: int, n_stages: int) -> list[int]:
    if n_stages < 1 or n_stages > n_layers:
        raise SpecError(f"cannot split {n_layers} transformer layers into {n_stages} non-empty stages")
    base, extra = divmod(n_layers, n_stages)
    centre = (n_stages - 1) / 2
    by_centrality = sorted(range(n_stages), key=lambda s: (abs(s - centre), s))
    counts = [base] * n_stages
    for s in by_centrality[:extra]:
        counts[s] += 1
    return counts
