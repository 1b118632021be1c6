"""Local search over stage boundaries, with an evaluator in the loop: move one boundary by one layer and
keep the move when the evaluated iteration time improves (first-improvement hill climbing), then kick
the best partition with a few random moves and climb again while evaluations remain (iterated local
search; Lourenco, Martin & Stuetzle 2003).

For fixed placement a move shifts a layer between neighbouring stages. For RoundPipe's asymmetric
partitions the forward and backward boundaries move independently, the fused stage's start moves the
forward end and the deepest backward boundary together (more or fewer layers fused with the head), and
stages may merge with a neighbour or split in two (the stage count is free: GPUs are stateless). Every
stage keeps at least one transformer layer (the fused stage may hold the head alone). The evaluator is a
callable, usually the search's fast estimate; this module is pure and deterministic for a given seed."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from rpsim.errors import Infeasible, SpecError
from rpsim.ir import Partition
from rpsim.partition.counts import fixed_partition, roundpipe_partition

Counts = tuple[tuple[int, ...], tuple[int, ...]]  # (forward counts, backward counts in execution order)
Evaluate = Callable[[Partition], float]  # iteration seconds; float("inf") when the plan does not fit
KICK_MOVES = 3  # random moves per kick: enough to leave a local optimum, few enough to stay near it


@dataclass(frozen=True)
class Move:
    kind: str  # shift | merge | split
    side: str  # fwd | bwd (execution order) | fused (shift only: the fused stage grows by delta)
    index: int  # shift / merge: stages index and index + 1; split: the stage that splits
    delta: int = 1  # shift: +1 moves a layer from stage index to index + 1; -1 the other way


@dataclass(frozen=True)
class LocalSearchResult:
    partition: Partition
    value: float
    start_value: float
    evaluations: int  # evaluator calls, the start included
    moves: int  # accepted moves


def partition_counts(p: Partition) -> Counts:
    """Transformer-layer counts per stage (the --partition grammar's numbers)."""
    n = p.n_layers

    def counts(ranges: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
        return tuple(sum(1 for layer in range(a, b) if 0 < layer < n - 1) for a, b in ranges)

    if not p.fused:
        return counts(p.fwd), ()
    return counts(p.fwd), tuple(reversed(counts(p.bwd)))


def counts_partition(c: Counts, n_layers: int) -> Partition:
    fwd, bwd = c
    return roundpipe_partition(fwd, bwd, n_layers) if bwd else fixed_partition(fwd, n_layers)


def moves_of(c: Counts) -> list[Move]:
    fwd, bwd = c
    out = [Move("shift", "fwd", i, d) for i in range(len(fwd) - 1) for d in (1, -1)]
    if bwd:
        out += [Move("shift", "bwd", i, d) for i in range(1, len(bwd) - 1) for d in (1, -1)]
        if fwd and len(bwd) > 1:
            out += [Move("shift", "fused", 0, d) for d in (1, -1)]
        out += [Move("merge", "fwd", i) for i in range(len(fwd) - 1)]
        out += [Move("merge", "bwd", i) for i in range(1, len(bwd) - 1)]
        out += [Move("split", "fwd", i) for i in range(len(fwd))]
        out += [Move("split", "bwd", i) for i in range(1, len(bwd))]
    return out


def apply_move(c: Counts, m: Move) -> Counts | None:
    """The counts after the move, or None when a stage would be left without a transformer layer."""
    fwd, bwd = list(c[0]), list(c[1])
    side = fwd if m.side == "fwd" else bwd
    i = m.index
    if m.kind == "merge":
        if i + 1 >= len(side):
            return None
        side[i:i + 2] = [side[i] + side[i + 1]]
    elif m.kind == "split":
        if i >= len(side) or side[i] < 2:
            return None
        side[i:i + 1] = [side[i] - side[i] // 2, side[i] // 2]
    elif m.side == "fused":
        fwd[-1], bwd[1], bwd[0] = fwd[-1] - m.delta, bwd[1] - m.delta, bwd[0] + m.delta
        if fwd[-1] < 1 or bwd[1] < 1 or bwd[0] < 0:
            return None
    else:
        if i + 1 >= len(side):
            return None
        side[i], side[i + 1] = side[i] - m.delta, side[i + 1] + m.delta
        if side[i] < 1 or side[i + 1] < 1:
            return None
    return tuple(fwd), tuple(bwd)


class _Climber:
    """Memoised evaluations under a budget, and first-improvement climbing from a start."""

    def __init__(self, evaluate: Evaluate, n_layers: int, budget: int, rng: random.Random,
                 sideways: int) -> None:
        self.evaluate, self.n_layers, self.budget, self.rng = evaluate, n_layers, budget, rng
        self.sideways = sideways
        self.seen: dict[Counts, float] = {}
        self.accepted = 0

    @property
    def spent(self) -> bool:
        return len(self.seen) >= self.budget

    def value(self, c: Counts) -> float:
        if c not in self.seen:
            try:
                self.seen[c] = self.evaluate(counts_partition(c, self.n_layers))
            except (Infeasible, SpecError):
                self.seen[c] = float("inf")
        return self.seen[c]

    def climb(self, cur: Counts, best: float, rel_tol: float) -> tuple[Counts, float]:
        """A kept move is tried again first: boundaries tend to drift several layers. Up to `sideways`
        moves that leave the time unchanged are taken too, to cross plateaus (a slowest stage shared by
        several stages improves only once all of them do). A state seen before is skipped: it lost to a
        best no better than the current one, so no walk cycles."""
        sideways = self.sideways
        best_c, improved = cur, True
        while improved and not self.spent:
            improved = False
            order = moves_of(cur)
            self.rng.shuffle(order)
            for m in order:
                nxt = apply_move(cur, m)
                while nxt is not None and nxt not in self.seen and not self.spent:
                    v = self.value(nxt)
                    if v < best * (1 - rel_tol):
                        best_c, best = nxt, v
                    elif not (v <= best * (1 + rel_tol) and sideways > 0):
                        break
                    else:
                        sideways -= 1
                    cur, improved = nxt, True
                    self.accepted += 1
                    nxt = apply_move(cur, m)
                if improved:
                    break  # the move list belongs to the old stage layout: rebuild it
        return best_c, best

    def kick(self, c: Counts) -> Counts:
        for _ in range(KICK_MOVES):
            options = [n for n in (apply_move(c, m) for m in moves_of(c)) if n is not None]
            if options:
                c = self.rng.choice(options)
        return c


def local_search(start: Partition, evaluate: Evaluate, max_evaluations: int = 200, order_seed: int = 0,
                 rel_tol: float = 1e-9, max_kicks: int = 1000, sideways: int = 0) -> LocalSearchResult:
    """Climb from `start`, then kick and climb again until `max_evaluations` evaluator calls (or
    `max_kicks` kicks, or a kick that lands only on seen states) are spent; the best state wins.
    `sideways`: equal-time moves allowed per climb (0: strict improvement only, which keeps an
    approximate evaluator from wandering across its own flat regions)."""
    climber = _Climber(evaluate, start.n_layers - 2, max_evaluations, random.Random(order_seed), sideways)
    cur = partition_counts(start)
    start_value = climber.value(cur)
    best_c, best = climber.climb(cur, start_value, rel_tol)
    for _ in range(max_kicks):
        if climber.spent:
            break
        kicked = climber.kick(best_c)
        if kicked in climber.seen and all(n in climber.seen for n in
                                          (apply_move(kicked, m) for m in moves_of(kicked)) if n is not None):
            continue
        c, v = climber.climb(kicked, climber.value(kicked), rel_tol)
        if v < best * (1 - rel_tol):
            best_c, best = c, v
    return LocalSearchResult(counts_partition(best_c, climber.n_layers), best, start_value, len(climber.seen),
                             climber.accepted)
