"""The `roundpipe` library's partitioner (rpsim.partition.library_auto, from roundpipe 0.1.1 scheduler.py
ModelExecutePlan.auto): the plans the library chose on 2x H200, reproduced from rpsim's priced layer
times; closed-form cases of its packing directions, units and limit; and its choice as a property."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.export.library_plan import library_plan
from rpsim.partition.library_auto import (
    LIMIT_READ_AS_GB,
    UPPER_THRESHOLD,
    LibraryEstimates,
    library_partition,
    pack_for_budget,
    stage_byte_cap,
)
from rpsim.planner import make_plan, roundpipe_library_request
from rpsim.scenario import make_scenario
from rpsim.specs import ModelSpec, TrainingSpec
from rpsim.units import GiB

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "data" / "rpexec-bench" / "session9"
MACHINE = Path(__file__).resolve().parents[1] / "experiments" / "data" / "machines" / "h200x2.toml"


@pytest.mark.parametrize("size", ["8b", "2.8b"])
def test_the_library_plans_measured_on_2x_h200_come_out_of_rpsims_layer_times(size):
    """benchmarks/bench_rpexec.py ran the library's own partitioner on rpexec's layers (its full-logits
    loss, seq 2048, 8 microbatches) on 2x H200 and recorded the plan it chose after its timer warmed up.
    rpsim's planner, pricing the same layers on the calibrated machine, gives the same plan: 8B's forward
    stages of 6 layers from the top with the runt (embedding + 2) at the bottom, backward stages of 2 from
    the bottom up (embedding + 2 first), the head fused alone; 2.8B's backward stages of one layer."""
    doc = json.loads((BENCH / "lease1-before-kernel-warmup" / f"bench-{size}.json").read_text())
    c = doc["config"]
    model = ModelSpec(name=f"bench-{size}", **{k: v for k, v in c.items() if k not in ("seq", "global_batch", "n_mb")})
    train = TrainingSpec(seq_len=c["seq"], global_batch=c["global_batch"], mb_size=c["global_batch"] // c["n_mb"],
                         precision="fp16", loss_chunk_tokens=0)  # the library's run computes the full logits
    sc = make_scenario(model, str(MACHINE), train)
    plan = make_plan(sc, roundpipe_library_request(c["n_mb"]))
    recorded = next(r["auto_plan"] for r in doc["results"] if r.get("auto_plan"))
    got = library_plan(plan)
    assert (got["fwd_plan"], got["bwd_plan"]) == (recorded["fwd_plan"], recorded["bwd_plan"])


def _eight_b_shaped(n_layers: int = 32) -> LibraryEstimates:
    """Embedding (0.03 / 0.09 ms), layers (7 ms recompute, 21 ms recompute + backward), head (17 / 44 ms)."""
    fwd = [0.03] + [7.0] * n_layers + [17.0]
    bwd = [0.09] + [21.0] * n_layers + [44.0]
    return LibraryEstimates(fwd, bwd, [1e9] * len(fwd), [2e9] * len(fwd))


def test_closed_form_budget_is_the_head_and_packing_runs_both_ways():
    """31 layers (odd, so the backward direction shows: with 32 both directions pair them the same).
    W = 44 (the head). Budgets in [44, 48.4]: the head alone, and the head's 17 ms with 4 layers' 28.
    At 44: the head fused alone; forward stages of 6 layers (42 ms; 7 are 49) from the top, leaving the
    embedding and 1 layer at the bottom; backward stages from the bottom up, the embedding and 2 layers
    (42.09 ms) first, then pairs, and the last layer alone below the head (top-down packing would have
    put the runt at the bottom, with the embedding). 6 + 16 + 1 = 23 stages; 45 packs the same 23 at a
    higher cost. Not rebalanced: the forward runt stays."""
    est = _eight_b_shaped(31)
    assert [round(t, 9) for t in est.budgets()] == [44.0, 45.0]
    part = library_partition(est, 2, 141 * GiB)
    assert part.fwd == ((0, 2), (2, 8), (8, 14), (14, 20), (20, 26), (26, 32))
    assert part.bwd == ((0, 3), *((a, a + 2) for a in range(3, 31, 2)), (31, 32), (32, 33))


def test_sizes_in_gb_against_a_limit_in_gib():
    """Limit 0.6 x 10 GiB = 6 GiB, read as 6 GB: a stage may hold 3e9 bytes, not 3.22e9. Layers of 0.53 GB
    (forward) and 1.05 GB (backward): forward stages of 5 (2.65 GB; 6 would be 3.18), backward stages of 2
    (2.1; 3 would be 3.15). Times never bind: W = 30 (the head), a layer 1 + 2 ms. The budget 33 (the
    head and one layer fused) packs the same count, so 30 wins."""
    est = LibraryEstimates([1.0] * 8 + [10.0], [3.0] * 8 + [30.0], [0.53e9] * 8 + [0.5e9], [1.05e9] * 8 + [1e9])
    assert stage_byte_cap(6 * GiB, est.bwd_bytes) == pytest.approx(3e9, rel=1e-12)
    part = library_partition(est, 2, 6 * GiB)
    assert part.fwd == ((0, 3), (3, 8))
    assert part.bwd == ((0, 2), (2, 4), (4, 6), (6, 8), (8, 9))
    # Read as GiB, the cap would allow one more layer in each: the units are why these differ.
    assert 6 * 0.53e9 <= 3 * GiB and 3 * 1.05e9 <= 3 * GiB


def test_the_limit_is_raised_to_the_largest_layer_instead_of_failing():
    """scheduler.py warns and doubles the largest backward layer size when it exceeds half the limit."""
    assert stage_byte_cap(1 * GiB, [1e9, 5e9, 2e9]) == 5e9
    est = LibraryEstimates([1.0] * 4, [3.0] * 4, [2e9] * 4, [5e9] * 4)
    part = library_partition(est, 1, 1 * GiB)  # a backward stage holds one layer, a forward stage two
    assert part.fwd == ((0, 1), (1, 3)) and part.bwd == ((0, 1), (1, 2), (2, 3), (3, 4))


layer_st = st.tuples(st.integers(1, 40), st.integers(0, 80), st.integers(1, 30))  # re, bwd, bytes (x 1e8)


@settings(max_examples=150, deadline=None)
@given(st.lists(layer_st, min_size=3, max_size=24), st.integers(1, 8), st.integers(1, 40))
def test_the_choice_is_the_cheapest_budget_and_its_stages_are_greedy(layers, n_gpus, limit_gb):
    """Against every candidate budget: the chosen partition is the packing of the first budget with the
    least max(stages, GPUs) x budget; its stages stay within that budget and the cap; forward stages are
    maximal downwards, backward stages upwards (the next layer would break budget or cap)."""
    fwd = [float(r) for r, _, _ in layers]
    bwd = [float(r + b) for r, b, _ in layers]
    nbytes = [m * 1e8 for _, _, m in layers]
    est = LibraryEstimates(fwd, bwd, nbytes, [2 * m for m in nbytes])
    limit = limit_gb * 1e8 / LIMIT_READ_AS_GB
    cap = stage_byte_cap(limit, est.bwd_bytes)
    options = [(max(len(p.fwd) + len(p.bwd), n_gpus) * t, t, p)
               for t in est.budgets() if (p := pack_for_budget(est, t, cap)) is not None]
    if not options:
        with pytest.raises(Exception, match="one fused stage"):
            library_partition(est, n_gpus, limit)
        return
    part = library_partition(est, n_gpus, limit)
    least = min(cost for cost, _, _ in options)
    _, budget, expected = next(o for o in options if o[0] == least)
    assert part == expected
    w = max(max(fwd), max(bwd))
    assert w * (1 - 1e-12) <= budget <= UPPER_THRESHOLD * w * (1 + 1e-12)

    def fits(cost_of, bytes_of, a, b):
        return sum(cost_of[a:b]) <= budget * (1 + 1e-12) and sum(bytes_of[a:b]) <= cap * (1 + 1e-12)
    start = part.bwd[-1][0]
    assert fits(bwd, est.bwd_bytes, start, len(fwd))
    assert start == 0 or not fits(bwd, est.bwd_bytes, start - 1, len(fwd))
    assert all(fits(fwd, nbytes, a, b) for a, b in part.fwd)
    assert all(not fits(fwd, nbytes, a - 1, b) for a, b in part.fwd[1:])
    assert all(fits(bwd, est.bwd_bytes, a, b) for a, b in part.bwd[:-1])
    assert all(not fits(bwd, est.bwd_bytes, a, b + 1) for a, b in part.bwd[:-2])
