"""Which list-timed candidates the search need not estimate: those its lower bounds (rpsim.search.fast_bound)
prove cannot change what the full simulator confirms. A list-timed estimate builds, lowers and times a
whole plan (up to seconds); the bound costs microseconds.

The full stage (rpsim.search.run._full_stage) confirms candidates from three places, and a skipped
candidate X must be unable to reach or move any of them:
- the estimates it ranks: the first `positions` of the ranked list (top_k, the retries up to their limit,
  and the frontier picks that may sit among them). The list is the feasible estimates, best first, one
  per plan (twins within 0.5% merged, the later dropped), then reordered cheapest first inside runs
  within CHEAP_FIRST_RTOL of each run's lead. Every decision about an entry depends only on entries
  ranked before it, and a run whose lead has tokens/s >= t holds nothing below t * (1 - rtol). So if at
  least `positions` entries already known (the analytic and local-search estimates) have tokens/s >= t,
  and X's tokens/s is provably below t * (1 - rtol) (with a margin for the 5-digit tie rounding), the
  first `positions` entries are the same with or without X;
- the estimated frontier (tokens/s against peak GPU memory, NOISE_RTOL merged), from which the
  low-memory picks are drawn. Built in memory order, its last point's tokens/s never falls below
  (1 - NOISE_RTOL) times the best seen so far; so X, if some known entry A needs less GPU memory than X
  provably does and (1 - NOISE_RTOL) * A's tokens/s exceeds X's bound, is dropped when it comes and
  changes nothing;
- its twins: X's absence could let a twin it would have merged away into the list, so the twins of one
  plan (the same plan but for the recompute policy) are skipped together or not at all.
A candidate that provably does not fit (its memory bound above a capacity) is skipped alone: the ranking
holds feasible estimates only. The nearest miss, sought only when nothing fits, estimates them after all
(rpsim.search.run)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rpsim.search.fast_bound import Bound
from rpsim.search.fast_context import FastContext
from rpsim.search.pareto import NOISE_RTOL
from rpsim.search.space import Candidate
from rpsim.search.tasks import Scored

CHEAP_FIRST_RTOL = 0.002  # rpsim.search.run._cheap_first's run width
TIE_MARGIN = 1e-4  # rpsim.search.run.tie rounds tokens/s to 5 significant digits (<= 5e-5 relative)


@dataclass(frozen=True)
class Bounded:
    candidate: Candidate  # partition written out
    bound: Bound
    ctx: FastContext

    @property
    def tokens_per_s(self) -> float:
        """No estimate of it is faster."""
        return self.ctx.tokens_per_iteration / self.bound.iteration_s


def skipped(bounded: list[Bounded], ordered: list[Scored], positions: int, frontier_picks: bool = True
            ) -> dict[Candidate, str]:
    """The candidates of `bounded` the search need not estimate, each with why. `ordered`: the known
    feasible estimates, best first, one per plan (rpsim.search.run._distinct of the sorted pool);
    `positions`: how deep the full stage reaches into them; `frontier_picks`: whether it also confirms
    points of the estimated frontier."""
    out: dict[Candidate, str] = {}
    groups: dict[tuple, list[Bounded]] = defaultdict(list)
    for b in bounded:
        if b.bound.infeasible(b.ctx):
            out[b.candidate] = "needs more memory than the server has, by its memory lower bounds"
        else:
            c = b.candidate
            groups[(c.schedule, c.mb_size, c.virtual_stages, c.round_size, c.partition, c.defer_w)].append(b)
    if len(ordered) < positions:
        return out
    cut = min(s.estimate.tokens_per_s for s in ordered[:positions])  # type: ignore[union-attr]
    below = cut * (1 - CHEAP_FIRST_RTOL) * (1 - TIE_MARGIN)
    for twins in groups.values():
        if all(b.tokens_per_s < below and (not frontier_picks or _under_frontier(b, ordered)) for b in twins):
            for b in twins:
                out[b.candidate] = (f"at most {b.tokens_per_s:.0f} tokens/s by its lower bounds, below the "
                                    f"{positions} plans ranked for confirmation"
                                    + (", and off the estimated frontier" if frontier_picks else ""))
    return out


def _under_frontier(b: Bounded, ordered: list[Scored]) -> bool:
    """Some known estimate needs less GPU memory than b provably does and is faster beyond the frontier's
    tolerance than b can be."""
    return any(s.estimate.peak_gpu_bytes < b.bound.gpu_bytes  # type: ignore[union-attr]
               and (1 - NOISE_RTOL) * s.estimate.tokens_per_s > b.tokens_per_s  # type: ignore[union-attr]
               for s in ordered)
