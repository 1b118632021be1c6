"""Property tests of every fixed-placement builder (found by discovery: each stage bound to one GPU by
its TRAITS.placement): complete, stage-bound, causal, deadlock-free, the documented in-flight counts,
iteration repeats and input checks. Split-backward builders run one I and one W per (stage, mb)."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rpsim.errors import SpecError
from rpsim.ir import Action, Partition, Plan
from rpsim.schedules import SCHEDULES, get_schedule
from rpsim.schedules.base import BuildOptions

FIXED = tuple(name for name, m in SCHEDULES.items() if m.TRAITS.placement.fixed)
CHOSEN_V = tuple(name for name in FIXED if SCHEDULES[name].TRAITS.virtual_stages.fixed is None)
SETTINGS = settings(max_examples=60, deadline=None)

n_gpus_st = st.integers(1, 8)
n_mb_st = st.integers(1, 32)
v_st = st.integers(1, 4)


def _chain(n_stages: int) -> Partition:
    # Layer counts do not change an order; any contiguous ranges will do.
    return Partition.same(tuple((2 * s, 2 * s + 2) for s in range(n_stages)))


def _stages_per_gpu(name: str, v: int) -> int:
    return SCHEDULES[name].TRAITS.virtual_stages.resolve(v, v)


def _build(name: str, n_gpus: int, n_mb: int, v: int = 1, n_iters: int = 1) -> Plan:
    n_stages = n_gpus * _stages_per_gpu(name, v)
    options = BuildOptions(virtual_stages=v, n_iters=n_iters)
    return get_schedule(name).build(n_gpus, _chain(n_stages), n_mb, options)


def _build_or_skip(name: str, n_gpus: int, n_mb: int, v: int = 1, n_iters: int = 1) -> Plan:
    """Some schedules need enough microbatches (DualPipeV: M >= 2N); they say so naming n_mb."""
    try:
        return _build(name, n_gpus, n_mb, v, n_iters)
    except SpecError as e:
        assert "n_mb" in str(e), e
        assume(False)
        raise


def _deps(a: Action, kinds: dict[tuple[int, int], str], last: int) -> list[tuple[str, int, int]]:
    """Data dependencies of a compute action: F(s-1) -> F(s); F(s) and the backward of s+1 -> B/I(s);
    I(s) -> W(s). `kinds` says whether (stage, mb) runs B or I."""
    if a.kind == "F":
        return [("F", a.stage - 1, a.mb)] if a.stage else []
    if a.kind == "W":
        return [("I", a.stage, a.mb)]
    above = [(kinds[(a.stage + 1, a.mb)], a.stage + 1, a.mb)] if a.stage < last else []
    return [("F", a.stage, a.mb)] + above


def _completes(plan: Plan) -> bool:
    """Run every GPU's order with data dependencies only; True when nothing is left waiting, i.e. the
    orders cannot deadlock."""
    last = len(plan.partition.bwd) - 1
    kinds = {(a.stage, a.mb): a.kind for _, a in plan.compute_actions() if a.kind in ("B", "I")}
    orders = [list(plan.lane(g, "compute")) for g in range(plan.n_gpus)]
    done: set[tuple[str, int, int]] = set()
    pos, progress = [0] * len(orders), True
    while progress:
        progress = False
        for g, order in enumerate(orders):
            while pos[g] < len(order):
                a = order[pos[g]]
                if not all(d in done for d in _deps(a, kinds, last)):
                    break
                done.add((a.kind, a.stage, a.mb))
                pos[g], progress = pos[g] + 1, True
    return pos == [len(o) for o in orders]


def _check_invariants(name: str, plan: Plan, n_gpus: int, n_mb: int, n_stages: int) -> None:
    actions = list(plan.compute_actions())
    assert {a.kind for _, a in actions} <= {"F", "B", "I", "W"}
    counts = Counter((a.kind, a.stage, a.mb) for _, a in actions)
    assert set(counts.values()) == {1}
    for s in range(n_stages):
        for m in range(n_mb):
            # one forward, and its backward once: one B, or one I and one W
            assert counts[("F", s, m)] == 1
            assert (counts[("B", s, m)], counts[("I", s, m)], counts[("W", s, m)]) in ((1, 0, 0), (0, 1, 1))
    assert len(counts) == sum(2 if counts[("B", s, m)] else 3 for s in range(n_stages) for m in range(n_mb))
    gpu_of = SCHEDULES[name].TRAITS.placement.gpu_of
    for gpu, a in actions:
        assert gpu == gpu_of(a.stage, n_gpus, n_stages)  # the placement the traits declare
    for gpu in range(n_gpus):
        seen = set()
        for a in plan.lane(gpu, "compute"):
            assert a.kind == "F" or ("F", a.stage, a.mb) in seen, f"GPU {gpu}: {a} before its forward"
            assert a.kind != "W" or ("I", a.stage, a.mb) in seen, f"GPU {gpu}: {a} before its I"
            seen.add((a.kind, a.stage, a.mb))
    assert _completes(plan)


@pytest.mark.parametrize("name", FIXED)
@SETTINGS
@given(n_gpus=n_gpus_st, n_mb=n_mb_st, v=v_st)
def test_every_order_is_complete_stage_bound_causal_and_deadlock_free(name, n_gpus, n_mb, v):
    plan = _build_or_skip(name, n_gpus, n_mb, v)
    _check_invariants(name, plan, n_gpus, n_mb, len(plan.partition.bwd))
    assert plan.schedule == name and plan.level == "compute"
    assert plan.options["virtual_stages"] == _stages_per_gpu(name, v)


def _peak_in_flight(plan: Plan, stage: int) -> int:
    """Most microbatches whose forward has run on `stage` and whose backward has not (stored activations)."""
    peak = live = 0
    for a in plan.lane(stage % plan.n_gpus, "compute"):
        if a.stage == stage:
            live += 1 if a.kind == "F" else -1
            peak = max(peak, live)
    return peak


@SETTINGS
@given(n_gpus=n_gpus_st, n_mb=n_mb_st)
def test_1f1b_keeps_min_n_minus_s_m_microbatches_in_flight(n_gpus, n_mb):
    plan = _build("1f1b", n_gpus, n_mb)
    assert [_peak_in_flight(plan, s) for s in range(n_gpus)] == [min(n_gpus - s, n_mb) for s in range(n_gpus)]


@SETTINGS
@given(n_gpus=n_gpus_st, n_mb=n_mb_st)
def test_gpipe_keeps_every_microbatch_in_flight(n_gpus, n_mb):
    plan = _build("gpipe", n_gpus, n_mb)
    assert [_peak_in_flight(plan, s) for s in range(n_gpus)] == [n_mb] * n_gpus


@pytest.mark.parametrize("name", FIXED)
@settings(max_examples=20, deadline=None)
@given(n_gpus=st.integers(1, 4), n_mb=st.integers(1, 8), v=st.integers(1, 3), n_iters=st.integers(2, 3))
def test_iterations_repeat_the_first_back_to_back(name, n_gpus, n_mb, v, n_iters):
    plan = _build_or_skip(name, n_gpus, n_mb, v, n_iters)
    assert plan.n_iters == n_iters
    for gpu in range(n_gpus):
        lane = plan.lane(gpu, "compute")
        first = [a for a in lane if a.it == 0]
        assert list(lane) == [Action(a.kind, a.stage, a.mb, it) for it in range(n_iters) for a in first]


@pytest.mark.parametrize("name", FIXED)
def test_registry_entries_describe_fixed_placement(name):
    module = get_schedule(name)
    assert module.TRAITS.placement.fixed and not module.TRAITS.stateless
    assert module.DESCRIPTION and "\n" not in module.DESCRIPTION


@pytest.mark.parametrize("name", FIXED)
def test_wrong_stage_count_names_the_fields(name):
    with pytest.raises(SpecError, match=r"partition has 3 stages; expected n_gpus \* virtual_stages = 2 \* "):
        get_schedule(name).build(2, _chain(3), 4, BuildOptions(virtual_stages=2))


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize(("n_mb", "options", "field"), [
    (0, BuildOptions(), "n_mb must be >= 1, got 0"),
    (4, BuildOptions(n_iters=0), "options.n_iters must be >= 1, got 0"),
])
def test_bad_counts_are_spec_errors(name, n_mb, options, field):
    with pytest.raises(SpecError, match=field):
        get_schedule(name).build(2, _chain(2), n_mb, options)


@pytest.mark.parametrize("name", CHOSEN_V)
def test_zero_virtual_stages_is_a_spec_error(name):
    with pytest.raises(SpecError, match="options.virtual_stages must be >= 1, got 0"):
        get_schedule(name).build(2, _chain(2), 4, BuildOptions(virtual_stages=0))


@pytest.mark.parametrize("name", FIXED)
def test_asymmetric_partition_is_a_spec_error(name):
    partition = Partition(fwd=((0, 1), (1, 4)), bwd=((0, 2), (2, 4)))
    with pytest.raises(SpecError, match=r"partition must be symmetric \(fwd == bwd, fused=False\)"):
        get_schedule(name).build(2, partition, 4, BuildOptions())


def test_interleaved_small_examples_match_the_megatron_picture():
    """N=2, V=2, M=4 (one group of 4): rank 0 warms up with 4 forwards, rank 1 with 2."""
    plan = _build("interleaved", 2, 4, 2)
    text = [" ".join(str(a) for a in plan.lane(g, "compute")) for g in range(2)]
    assert text[0] == "0F0 0F1 2F0 2F1 0F2 2B0 0F3 2B1 2F2 0B0 2F3 0B1 2B2 2B3 0B2 0B3"
    assert text[1] == "1F0 1F1 3F0 3B0 3F1 3B1 1F2 1B0 1F3 1B1 3F2 3B2 3F3 3B3 1B2 1B3"
