"""Validation of a `FlowNetwork`'s resources and duplex pairs (rpsim.sim.network), kept apart from the
hot path: it runs once per network."""
from __future__ import annotations

from rpsim.errors import SpecError, choices_message
from rpsim.sim.sharing import DuplexPair


def check_network(capacity_bytes_per_s: dict[str, float], duplex_pairs: tuple[DuplexPair, ...],
                   duplex_factor: float) -> None:
    for resource, capacity in capacity_bytes_per_s.items():
        if not capacity > 0:
            raise SpecError(f"capacity_bytes_per_s[{resource!r}] must be > 0 (inf allowed), got {capacity!r}")
    if not 0 < duplex_factor <= 1:
        raise SpecError(f"duplex_factor must be in (0, 1] (a measured slowdown), got {duplex_factor!r}")
    for pair in duplex_pairs:
        if len(pair) not in (2, 3, 4):
            raise SpecError(f"duplex pair {pair!r} must be (a, b), (a, b, factor) or (a, b, factor_a, factor_b)")
        for resource in pair[:2]:
            if resource not in capacity_bytes_per_s:
                raise SpecError(choices_message("resource", resource, capacity_bytes_per_s))
        for factor in pair[2:]:
            if not 0 < factor <= 1:
                raise SpecError(f"duplex factor must be in (0, 1], got {factor!r} in {pair!r}")
