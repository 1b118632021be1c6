"""rpsim.partition.local_search: moves keep partitions valid, the search never ends worse than it started,
stays within its budget, is deterministic for a seed, and finds the optimum of a simple separable cost."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.ir import Partition
from rpsim.partition.counts import fixed_partition, roundpipe_partition
from rpsim.partition.local_search import (
    apply_move,
    counts_partition,
    local_search,
    moves_of,
    partition_counts,
)


def max_stage_cost(layer_s: list[float]):
    """Iteration time of a balanced pipeline: the slowest stage (forward and backward stages alike)."""
    def evaluate(p: Partition) -> float:
        stages = list(p.fwd) + ([] if not p.fused else list(p.bwd))
        return max(sum(layer_s[a:b]) for a, b in stages)
    return evaluate


@st.composite
def roundpipe_counts(draw):
    n_layers = draw(st.integers(4, 24))
    fused = draw(st.integers(0, n_layers // 4))
    n_fwd = draw(st.integers(1, n_layers - fused))
    fwd = draw(st.lists(st.integers(1, 4), min_size=1, max_size=n_fwd))
    rest = n_layers - fused - sum(fwd)
    if rest < 0:
        fwd, rest = [n_layers - fused], 0
    fwd[-1] += rest
    bwd_rest = n_layers - fused
    bwd, left = [fused], bwd_rest
    while left:
        k = min(left, draw(st.integers(1, 3)))
        bwd.append(k)
        left -= k
    return n_layers, tuple(fwd), tuple(bwd)


@settings(max_examples=60, deadline=None)
@given(roundpipe_counts())
def test_every_move_keeps_a_valid_partition(case):
    n_layers, fwd, bwd = case
    p = roundpipe_partition(fwd, bwd, n_layers)
    assert partition_counts(p) == (fwd, bwd)
    for m in moves_of((fwd, bwd)):
        nxt = apply_move((fwd, bwd), m)
        if nxt is None:
            continue
        q = counts_partition(nxt, n_layers)  # raises on an invalid partition
        assert sum(nxt[0]) + nxt[1][0] == n_layers and sum(nxt[1]) == n_layers
        assert min(nxt[0]) >= 1 and min(nxt[1][1:], default=1) >= 1 and q.fused


def test_fixed_moves_shift_one_layer_between_neighbours():
    c = ((3, 3, 2), ())
    assert {apply_move(c, m) for m in moves_of(c)} == {((2, 4, 2), ()), ((4, 2, 2), ()), ((3, 2, 3), ()),
                                                         ((3, 4, 1), ())}


def test_finds_the_balanced_optimum_of_a_separable_cost():
    layer_s = [0.5] + [1.0] * 12 + [3.0]  # embedding, 12 layers, a heavy head
    start = fixed_partition([3, 3, 3, 3], 12)
    result = local_search(start, max_stage_cost(layer_s), max_evaluations=500, sideways=20)
    assert result.start_value == 6.0  # the last stage: 3 layers + the head
    # The head needs a stage of its own plus one layer (4.0); the rest fit in stages of at most 4.0.
    assert result.value == 4.0 and partition_counts(result.partition)[0][-1] == 1
    assert result.moves >= 2 and result.evaluations <= 500


def test_roundpipe_search_trades_fused_layers_and_stage_counts():
    layer_s = [0.1] + [1.0] * 16 + [2.0]
    slowest = max_stage_cost(layer_s)

    def evaluate(p: Partition) -> float:  # the slowest stage, then balance (as stage imbalance costs)
        return slowest(p) + 0.001 * sum(sum(layer_s[a:b]) ** 2 for a, b in list(p.fwd) + list(p.bwd))
    start = roundpipe_partition([7, 7], [2, 7, 7], 16)  # fused: 2 layers + head = 4.0
    result = local_search(start, evaluate, max_evaluations=3000, sideways=40)
    fwd, bwd = partition_counts(result.partition)
    assert result.value < result.start_value
    assert slowest(result.partition) == 2.0  # split down to two layers a stage, the head alone fused
    assert bwd[0] == 0 and len(fwd) > 2 and len(bwd) > 3


def test_budget_and_determinism():
    layer_s = [0.2] + [1.0 + 0.1 * (i % 3) for i in range(20)] + [2.5]
    start = roundpipe_partition([10, 10], [0, 5, 5, 5, 5], 20)
    runs = [local_search(start, max_stage_cost(layer_s), max_evaluations=40, order_seed=7) for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0].evaluations <= 40 and runs[0].value <= runs[0].start_value


def test_infeasible_neighbours_are_skipped():
    layer_s = [0.0] + [1.0] * 8 + [1.0]

    def evaluate(p: Partition) -> float:
        if any(b - a > 4 for a, b in p.fwd):
            return float("inf")  # "does not fit"
        return max_stage_cost(layer_s)(p)
    result = local_search(fixed_partition([2, 2, 4], 8), evaluate, max_evaluations=100)
    assert result.start_value == float("inf")  # 4 layers and the head in the last stage
    assert result.value == 3.0 and all(b - a <= 4 for a, b in result.partition.fwd)
