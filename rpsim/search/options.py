"""`SearchOptions`: what `rpsim search` searches and how much it confirms. Its own module so the CLI can
build its parser (the flags' defaults) without importing the search and the simulator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SearchOptions:
    budget: int = 8000  # fast-stage evaluations: the structured candidates, then local-search moves
    top_k: int = 5  # plans the full simulator confirms (more when some turn out not to fit)
    jobs: int | None = None  # local worker processes; None: every core
    cluster: Any = None  # a Dask scheduler address (or Client): run there instead
    seed: int = 0  # orders local-search moves, and samples the candidates when they exceed the budget
    seeds: int = 12  # local searches, from the best distinct configurations
    frontier_extra: int = 2  # low-memory plans off the estimated frontier the simulator also confirms
    schedules: tuple[str, ...] | None = None
    mb_sizes: tuple[int, ...] | None = None  # None: every divisor of the global batch
    reference: bool = True  # also confirm RoundPipe's default plan
    diagnose: bool = True  # when nothing fits, simulate the nearest miss for an exact reason
    fidelity: str = "pcie"
    # Skip the list-timed candidates whose lower bounds prove they could not be confirmed
    # (rpsim.search.prune); False estimates them all, for tests that check the skips change nothing.
    prune: bool = True
