"""allocate_rates: hand-computed max-min, priority and duplex cases, and hypothesis properties."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.errors import SpecError
from rpsim.sim import sharing
from rpsim.sim.sharing import Flow, allocate_rates

GB = 1e9
REL = 1e-9


def test_one_flow_gets_the_whole_link():
    assert allocate_rates([Flow(0, ("link",))], {"link": 10 * GB}) == {0: 10 * GB}


def test_two_flows_split_one_link_evenly():
    rates = allocate_rates([Flow(0, ("link",)), Flow(1, ("link",))], {"link": 10 * GB})
    assert rates == {0: 5 * GB, 1: 5 * GB}


def test_priority_zero_takes_the_link_and_priority_one_waits():
    rates = allocate_rates([Flow("act", ("link",), 0), Flow("weights", ("link",), 1)], {"link": 10 * GB})
    assert rates == {"act": 10 * GB, "weights": 0.0}


def test_lower_class_gets_what_the_higher_class_leaves():
    # The urgent flow is held to 4 GB/s by link b, so 6 GB/s of link a are left to the bulk flow.
    flows = [Flow("urgent", ("a", "b"), 0), Flow("bulk", ("a",), 1)]
    rates = allocate_rates(flows, {"a": 10 * GB, "b": 4 * GB})
    assert rates == {"urgent": 4 * GB, "bulk": 6 * GB}


def test_classic_max_min_two_links_three_flows_equal_capacities():
    # Bertsekas & Gallager Sec. 6.5.2: a long flow over both links and one short flow per link.
    flows = [Flow("long", ("a", "b")), Flow("short_a", ("a",)), Flow("short_b", ("b",))]
    rates = allocate_rates(flows, {"a": 1.0, "b": 1.0})
    assert rates == {"long": 0.5, "short_a": 0.5, "short_b": 0.5}


def test_classic_max_min_two_links_three_flows_unequal_capacities():
    # Link a (capacity 1) is the bottleneck of the long flow; link b gives its rest to the short flow.
    flows = [Flow("long", ("a", "b")), Flow("short_a", ("a",)), Flow("short_b", ("b",))]
    rates = allocate_rates(flows, {"a": 1.0, "b": 2.0})
    assert rates == {"long": 0.5, "short_a": 0.5, "short_b": 1.5}


def test_duplex_pair_busy_both_ways_slows_each_direction():
    flows = [Flow("up", ("h2d",)), Flow("down", ("d2h",))]
    rates = allocate_rates(flows, {"h2d": 10 * GB, "d2h": 10 * GB}, [("h2d", "d2h")], 0.5)
    assert rates == {"up": 5 * GB, "down": 5 * GB}


def test_duplex_pair_busy_one_way_runs_at_full_capacity():
    rates = allocate_rates([Flow("up", ("h2d",))], {"h2d": 10 * GB, "d2h": 10 * GB}, [("h2d", "d2h")], 0.5)
    assert rates == {"up": 10 * GB}


def test_duplex_slowdown_counts_a_starved_lower_class_flow():
    flows = [Flow("up", ("h2d",), 0), Flow("down_hi", ("d2h",), 0), Flow("down_lo", ("d2h",), 1)]
    rates = allocate_rates(flows, {"h2d": 10 * GB, "d2h": 10 * GB}, [("h2d", "d2h")], 0.5)
    assert rates == {"up": 5 * GB, "down_hi": 5 * GB, "down_lo": 0.0}


def test_per_pair_and_per_direction_duplex_factors():
    # RTX 4090 box, PCIe 4.0: H2D drops from ~25 to ~13.5 GB/s while D2H runs (hardware.md).
    capacity = {"h2d0": 25 * GB, "d2h0": 25 * GB, "h2d1": 25 * GB, "d2h1": 25 * GB}
    pairs = [("h2d0", "d2h0", 0.54, 0.9), ("h2d1", "d2h1", 0.8)]
    flows = [Flow(i, (r,)) for i, r in enumerate(capacity)]
    rates = allocate_rates(flows, capacity, pairs, duplex_factor=0.5)
    assert rates == pytest.approx({0: 13.5 * GB, 1: 22.5 * GB, 2: 20 * GB, 3: 20 * GB}, rel=REL)


def test_links_remember_capacities_by_resource_set_and_every_fill_spends_a_fresh_copy():
    # The duplex slowdown depends on which resources a fill meets; the filling spends the capacities it
    # gets. A memo handing out its own dict, or keyed by less than the set, fails the repeats.
    links = sharing.Links.of({"h2d": 10 * GB, "d2h": 10 * GB}, [("h2d", "d2h")], 0.5)
    both = [Flow("up", ("h2d",)), Flow("down", ("d2h",))]
    one = [Flow("up", ("h2d",))]
    for _ in range(3):
        assert sharing.allocate_on(both, links) == {"up": 5 * GB, "down": 5 * GB}
        assert sharing.allocate_on(one, links) == {"up": 10 * GB}
    assert len(links.effective_capacities) == 2


def test_empty_path_is_unlimited_and_takes_no_capacity():
    rates = allocate_rates([Flow("local", ()), Flow("x", ("link",))], {"link": 10 * GB})
    assert rates == {"local": math.inf, "x": 10 * GB}


def test_unlimited_resource_gives_infinite_rate_without_nan():
    flows = [Flow(0, ("dram",)), Flow(1, ("dram", "link"))]
    rates = allocate_rates(flows, {"dram": math.inf, "link": 10 * GB})
    assert rates == {0: math.inf, 1: 10 * GB}


def test_unknown_resource_is_a_spec_error_naming_it():
    with pytest.raises(SpecError, match="'h2d9'"):
        allocate_rates([Flow(0, ("h2d9",))], {"h2d0": 1.0})


def test_duplicate_flow_ids_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        allocate_rates([Flow(0, ("a",)), Flow(0, ("a",))], {"a": 1.0})


RESOURCES = ("h2d0", "d2h0", "h2d1", "d2h1", "dram", "upi")
PAIRS = (("h2d0", "d2h0"), ("h2d1", "d2h1"))


@st.composite
def scenarios(draw):
    capacity = {r: draw(st.floats(1e6, 1e11)) for r in RESOURCES}
    paths = st.lists(st.sampled_from(RESOURCES), max_size=3, unique=True).map(tuple)
    flows = [Flow(i, draw(paths), draw(st.integers(0, 2))) for i in range(draw(st.integers(0, 12)))]
    return flows, capacity, draw(st.floats(0.3, 1.0))


def _effective(flows, capacity, factor):
    busy = {r for f in flows for r in f.path}
    both = {r for a, b in PAIRS if a in busy and b in busy for r in (a, b)}
    return {r: c * (factor if r in both else 1.0) for r, c in capacity.items()}


def _load(flows, rates, resource, classes=None):
    return sum(rates[f.flow_id] for f in flows if resource in f.path and (classes is None or f.priority in classes))


@given(scenarios())
def test_no_resource_exceeds_its_effective_capacity(scenario):
    flows, capacity, factor = scenario
    rates = allocate_rates(flows, capacity, PAIRS, factor)
    for resource, cap in _effective(flows, capacity, factor).items():
        assert _load(flows, rates, resource) <= cap * (1 + REL)


@given(scenarios())
def test_class_zero_flows_always_move(scenario):
    flows, capacity, factor = scenario
    rates = allocate_rates(flows, capacity, PAIRS, factor)
    assert all(rates[f.flow_id] > 0 for f in flows if f.priority == 0)
    assert all(rates[f.flow_id] >= 0 for f in flows)


@given(scenarios())
def test_allocation_is_deterministic(scenario):
    flows, capacity, factor = scenario
    assert allocate_rates(flows, capacity, PAIRS, factor) == allocate_rates(list(flows), dict(capacity),
                                                                           PAIRS, factor)


@given(scenarios(), st.randoms(use_true_random=False))
def test_allocation_does_not_depend_on_flow_order(scenario, rng):
    # The max-min fair allocation is unique, so shuffling the input changes rounding only.
    flows, capacity, factor = scenario
    shuffled = list(flows)
    rng.shuffle(shuffled)
    expected = allocate_rates(flows, capacity, PAIRS, factor)
    scale = max(capacity.values())
    got = allocate_rates(shuffled, capacity, PAIRS, factor)
    assert all(math.isclose(got[k], v, rel_tol=1e-7, abs_tol=1e-7 * scale) for k, v in expected.items())


@given(scenarios())
def test_every_flow_has_a_bottleneck(scenario):
    # Bertsekas & Gallager Prop. 6.5.2 per class: a flow of class k is max-min fair iff some resource on its
    # path is saturated by classes <= k and no class-k flow there gets more than it does.
    flows, capacity, factor = scenario
    rates = allocate_rates(flows, capacity, PAIRS, factor)
    effective = _effective(flows, capacity, factor)
    for flow in (f for f in flows if f.path):
        upto = set(range(flow.priority + 1))
        assert any(
            _load(flows, rates, r, upto) >= effective[r] * (1 - 1e-7)
            and all(rates[g.flow_id] <= rates[flow.flow_id] * (1 + 1e-7) + 1e-9
                    for g in flows if r in g.path and g.priority == flow.priority)
            for r in flow.path
        ), (flow, rates)


@st.composite
def big_classes(draw):
    """One class over many resources (as many-socket servers make): a few shared hubs with repeated
    capacities (ties between fair shares), inf ones, paths of 1-4 resources, repeats allowed."""
    n_resources = draw(st.integers(1, 60))
    levels = draw(st.lists(st.sampled_from([1e9, 2e9, 2.5e9, 3e9, 7e9, 1e10, math.inf]), min_size=1, max_size=4))
    capacity = {f"r{k}": draw(st.sampled_from(levels)) if draw(st.booleans()) else draw(st.floats(1e8, 1e11))
                for k in range(n_resources)}
    names = list(capacity)
    paths = st.lists(st.sampled_from(names), min_size=1, max_size=4).map(tuple)
    flows = [Flow(i, draw(paths), 1) for i in range(draw(st.integers(1, 120)))]
    return flows, capacity


@settings(max_examples=200, deadline=None)
@given(big_classes())
def test_heap_filling_picks_the_scans_bottlenecks_to_the_same_floats(scenario):
    # Both bottleneck searches must give identical floats (==), not merely close ones: figures depend on it.
    flows, capacity = scenario
    original = sharing.HEAP_FILL_RESOURCES, sharing.SCAN_ROUNDS
    try:
        sharing.HEAP_FILL_RESOURCES = 10**9  # always scan
        scanned = allocate_rates(flows, capacity)
        sharing.HEAP_FILL_RESOURCES, sharing.SCAN_ROUNDS = 1, 0  # the heap from the first round
        heaped = allocate_rates(flows, capacity)
        sharing.SCAN_ROUNDS = 2  # two rounds scanned, then the heap from the state they left
        handed_over = allocate_rates(flows, capacity)
    finally:
        sharing.HEAP_FILL_RESOURCES, sharing.SCAN_ROUNDS = original
    assert heaped == scanned
    assert handed_over == scanned


def _per_flow_filling(flows, capacity):
    """The filling one flow at a time (no grouping of alike flows), one class: the reference whose floats
    the grouped filling must reproduce. Ties go to the resource first seen in the flow list."""
    left = {}
    for flow in flows:
        for r in flow.path:
            left.setdefault(r, capacity[r])
    n_crossing: dict[str, int] = {}
    for flow in flows:
        for r in flow.path:
            n_crossing[r] = n_crossing.get(r, 0) + 1
    rates, frozen = {}, set()
    while n_crossing:
        bottleneck, share = None, math.inf
        for r, n in n_crossing.items():
            s = left[r] / n if left[r] > 0.0 else 0.0
            if s < share:
                bottleneck, share = r, s
        for flow in flows:
            if flow.flow_id in frozen or (bottleneck is not None and bottleneck not in flow.path):
                continue
            frozen.add(flow.flow_id)
            rates[flow.flow_id] = share
            for r in flow.path:
                left[r] -= share
                n_crossing[r] -= 1
                if not n_crossing[r]:
                    del n_crossing[r]
        if bottleneck is None:
            break
    return rates


@settings(max_examples=200, deadline=None)
@given(big_classes(), st.randoms(use_true_random=False))
def test_alike_flows_filled_as_one_group_get_the_per_flow_floats(scenario, rng):
    # Many flows on few distinct paths (as a copy's per-socket shares and repeated copies make), in a
    # shuffled order: grouping them must give exactly (==) the floats of filling flow by flow.
    flows, capacity = scenario
    repeated = [Flow(i, flows[rng.randrange(min(len(flows), 5))].path, 1) for i in range(3 * len(flows))]
    assert allocate_rates(repeated, capacity) == _per_flow_filling(repeated, capacity)
