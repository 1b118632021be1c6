"""FlowNetwork: completion times computed by hand, utilisation counters, work conservation, determinism."""
from __future__ import annotations

import math
import random

import pytest
import simpy
from hypothesis import given
from hypothesis import strategies as st

from rpsim.errors import SpecError
from rpsim.sim import incremental_sharing
from rpsim.sim.network import FlowNetwork

GB = 1e9
REL = 1e-12


def _run(capacity, transfers, **network_kwargs):
    """Start every (path, n_bytes, priority, latency_s) at time 0; return each one's completion time."""
    env = simpy.Environment()
    net = FlowNetwork(env, capacity, **network_kwargs)
    finish_s: dict[int, float] = {}

    def watch(i, event):
        yield event
        finish_s[i] = env.now

    for i, (path, n_bytes, priority, latency_s) in enumerate(transfers):
        env.process(watch(i, net.transfer(path, n_bytes, priority, latency_s)))
    env.run()
    assert net.active_flows == 0
    return [finish_s[i] for i in range(len(transfers))], net


def test_one_flow_of_10_gb_on_a_10_gb_per_s_link_takes_one_second():
    finish_s, _ = _run({"link": 10 * GB}, [(("link",), 10 * GB, 1, 0.0)])
    assert finish_s == [1.0]


def test_two_identical_concurrent_flows_each_take_twice_as_long():
    finish_s, _ = _run({"link": 10 * GB}, [(("link",), 10 * GB, 1, 0.0)] * 2)
    assert finish_s == [2.0, 2.0]


def test_priority_zero_finishes_as_if_alone_and_priority_one_at_total_over_capacity():
    transfers = [(("link",), 6 * GB, 1, 0.0), (("link",), 4 * GB, 0, 0.0)]
    finish_s, _ = _run({"link": 10 * GB}, transfers)
    assert finish_s == pytest.approx([1.0, 0.4], rel=REL)


def test_duplex_flows_slow_each_other_and_the_survivor_speeds_back_up():
    # Both at 0.5 * 10 GB/s; d2h's 5 GB end at 1 s, leaving 5 GB of h2d at the full 10 GB/s: 0.5 s more.
    transfers = [(("h2d",), 10 * GB, 1, 0.0), (("d2h",), 5 * GB, 1, 0.0)]
    finish_s, _ = _run({"h2d": 10 * GB, "d2h": 10 * GB}, transfers,
                       duplex_pairs=[("h2d", "d2h")], duplex_factor=0.5)
    assert finish_s == pytest.approx([1.5, 1.0], rel=REL)


def test_flow_alone_on_a_duplex_pair_runs_at_full_capacity():
    finish_s, _ = _run({"h2d": 10 * GB, "d2h": 10 * GB}, [(("h2d",), 10 * GB, 1, 0.0)],
                       duplex_pairs=[("h2d", "d2h")], duplex_factor=0.5)
    assert finish_s == [1.0]


def test_flow_arriving_midway_slows_the_running_one():
    # A alone moves 5 GB by 0.5 s; then both at 5 GB/s: B's 2 GB end at 0.9 s with A 3 GB short,
    # which it moves alone at 10 GB/s by 1.2 s.
    transfers = [(("link",), 10 * GB, 1, 0.0), (("link",), 2 * GB, 1, 0.5)]
    finish_s, _ = _run({"link": 10 * GB}, transfers)
    assert finish_s == pytest.approx([1.2, 0.9], rel=REL)


def test_one_rate_computation_per_instant_with_a_change(monkeypatch):
    # Changes at 0 s (two arrivals), 0.5 s (an arrival: all three at 10/3 GB/s) and 1.1 s (its 2 GB
    # done); the wake-up for 1 s scheduled at 0 s is stale by then and must not cause one more.
    calls = []

    settle = incremental_sharing.IncrementalRates.settle_covering

    def counting(self):
        calls.append(len(self))
        return settle(self)

    monkeypatch.setattr(incremental_sharing.IncrementalRates, "settle_covering", counting)
    transfers = [(("link",), 5 * GB, 1, 0.0), (("link",), 5 * GB, 1, 0.0), (("link",), 2 * GB, 1, 0.5)]
    finish_s, _ = _run({"link": 10 * GB}, transfers)
    assert finish_s == pytest.approx([1.2, 1.2, 1.1], rel=REL)
    assert calls == [2, 3, 2]


def test_latency_delays_the_start():
    finish_s, _ = _run({"link": 10 * GB}, [(("link",), 10 * GB, 1, 0.25)])
    assert finish_s == [1.25]


def test_zero_bytes_and_empty_paths_take_the_latency_only():
    transfers = [(("link",), 0.0, 1, 0.3), ((), 5 * GB, 1, 0.2), (("link",), 0.0, 1, 0.0)]
    finish_s, net = _run({"link": 10 * GB}, transfers)
    assert finish_s == [0.3, 0.2, 0.0]
    assert net.n_completed == 0 and net.busy_s == {"link": 0.0}


def test_a_transfer_started_at_a_completion_gets_the_link_at_once():
    env = simpy.Environment()
    net = FlowNetwork(env, {"link": 10 * GB})
    times_s = []

    def chain():
        for _ in range(3):
            yield net.transfer(("link",), 5 * GB)
            times_s.append(env.now)

    env.process(chain())
    env.run()
    assert times_s == pytest.approx([0.5, 1.0, 1.5], rel=REL)


def test_bytes_through_busy_time_and_active_flows():
    env = simpy.Environment()
    net = FlowNetwork(env, {"dram": 40 * GB, "h2d": 10 * GB, "d2h": 10 * GB})
    net.transfer(("dram", "h2d"), 10 * GB)
    net.transfer(("d2h", "dram"), 5 * GB, latency_s=2.0)
    seen = []
    env.process(_sample(env, net, [0.5, 1.5, 2.25], seen))
    env.run()
    assert seen == [1, 0, 1]
    assert net.bytes_through == pytest.approx({"dram": 15 * GB, "h2d": 10 * GB, "d2h": 5 * GB}, rel=REL)
    assert net.busy_s == pytest.approx({"dram": 1.5, "h2d": 1.0, "d2h": 0.5}, rel=REL)
    assert net.n_completed == 2


def _sample(env, net, at_s, seen):
    for t in at_s:
        yield env.timeout(t - env.now)
        seen.append(net.active_flows)


def test_sync_metrics_counts_up_to_now():
    env = simpy.Environment()
    net = FlowNetwork(env, {"link": 10 * GB})
    net.transfer(("link",), 10 * GB)
    env.run(until=0.25)
    net.sync_metrics()
    assert net.bytes_through["link"] == pytest.approx(2.5 * GB, rel=REL)
    assert net.busy_s["link"] == pytest.approx(0.25, rel=REL)


def test_bad_arguments_are_spec_errors():
    env = simpy.Environment()
    with pytest.raises(SpecError, match="capacity"):
        FlowNetwork(env, {"link": 0.0})
    with pytest.raises(SpecError, match="duplex"):
        FlowNetwork(env, {"a": 1.0, "b": 1.0}, [("a", "b")], duplex_factor=1.5)
    with pytest.raises(SpecError, match="'c'"):
        FlowNetwork(env, {"a": 1.0, "b": 1.0}, [("a", "c")])
    net = FlowNetwork(env, {"link": 1.0})
    with pytest.raises(SpecError, match="'lnk'"):
        net.transfer(("lnk",), 1.0)
    with pytest.raises(SpecError, match="n_bytes"):
        net.transfer(("link",), -1.0)


sizes = st.lists(st.floats(1e3, 1e10), min_size=1, max_size=12)


@given(sizes, st.floats(1e8, 1e11))
def test_equal_priority_flows_on_one_link_are_work_conserving(n_bytes, capacity):
    finish_s, _ = _run({"link": capacity}, [(("link",), b, 1, 0.0) for b in n_bytes])
    assert max(finish_s) == pytest.approx(sum(n_bytes) / capacity, rel=1e-9)
    # Processor sharing: the k-th smallest ends once every flow has moved that flow's bytes or its own.
    for b, t in zip(n_bytes, finish_s):
        assert t == pytest.approx(sum(min(b, other) for other in n_bytes) / capacity, rel=1e-9)


@given(sizes, st.lists(st.integers(0, 2), min_size=12, max_size=12))
def test_mixed_priorities_on_one_link_are_work_conserving(n_bytes, priorities):
    finish_s, _ = _run({"link": 10 * GB}, [(("link",), b, p, 0.0) for b, p in zip(n_bytes, priorities)])
    assert max(finish_s) == pytest.approx(sum(n_bytes) / (10 * GB), rel=1e-9)


def _eight_gpu_script(seed):
    rng = random.Random(seed)
    capacity = {f"{d}{g}": 25 * GB for g in range(8) for d in ("h2d", "d2h")}
    capacity |= {"dram0": 80 * GB, "dram1": 80 * GB, "upi": 40 * GB}
    transfers = []
    for _ in range(200):
        g, socket = rng.randrange(8), rng.randrange(2)
        hop = ("upi",) if socket != g // 4 else ()
        path = (f"dram{socket}", *hop, f"h2d{g}") if rng.random() < 0.5 else (f"d2h{g}", *hop, f"dram{socket}")
        transfers.append((path, rng.uniform(1e6, 5e8), rng.randrange(2), rng.uniform(0.0, 0.2)))
    return capacity, transfers


def test_flow_network_is_deterministic():
    capacity, transfers = _eight_gpu_script(seed=7)
    pairs = [(f"h2d{g}", f"d2h{g}", 0.54, 0.9) for g in range(8)]
    first, net_a = _run(capacity, transfers, duplex_pairs=pairs)
    second, net_b = _run(capacity, transfers, duplex_pairs=pairs)
    assert first == second
    assert net_a.bytes_through == net_b.bytes_through and net_a.busy_s == net_b.busy_s
    assert sum(net_a.bytes_through[f"h2d{g}"] + net_a.bytes_through[f"d2h{g}"] for g in range(8)) == \
        pytest.approx(sum(b for _, b, _, _ in transfers), rel=1e-12)


def test_flows_on_an_unlimited_resource_finish_when_they_start():
    # Rate inf: done at once, however many start together; the unlimited resource couples nothing, so the
    # limited flow crossing it keeps its link's rate; the counters stay finite and exact.
    finish_s, net = _run({"free": math.inf, "link": 10 * GB},
                         [(("free",), 5 * GB, 1, 0.5), (("free",), 5 * GB, 1, 0.5), (("free", "link"), 10 * GB, 1, 0.0)])
    assert finish_s == [0.5, 0.5, 1.0]
    assert net.bytes_through == {"free": 20 * GB, "link": 10 * GB}
    assert net.busy_s == {"free": 1.0, "link": 1.0}


class _AlwaysDeferredNetwork(FlowNetwork):
    """The settle after a latency timer always as its own zero-delay event (the behaviour before it ran
    inline when nothing else is queued at that instant)."""

    def _start_after_latency(self, flows):
        self._start_all(flows)


def _timed_run(network_class, capacity, transfers):
    """Each (wait_s, paths, n_bytes, priority, latency_s) starts after wait_s; (finish times, settle instants)."""
    env = simpy.Environment()
    net = network_class(env, capacity)
    settles: list[float] = []
    settle = net._rates.settle_covering

    def counted():
        settles.append(env.now)
        return settle()

    net._rates.settle_covering = counted
    finish_s: dict[int, float] = {}

    def lane(i, wait_s, paths, n_bytes, priority, latency_s):
        yield env.timeout(wait_s)
        done = env.event()
        net.start_flows(paths, n_bytes, priority, latency_s, done.succeed)
        yield done
        finish_s[i] = env.now

    for i, transfer in enumerate(transfers):
        env.process(lane(i, *transfer))
    env.run()
    return [finish_s[i] for i in range(len(transfers))], settles


_PATHS = [(("a",),), (("a", "b"),), (("b",),), (("a",), ("b",)), (("c", "b"),)]


@given(st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0]), st.sampled_from(_PATHS),
                          st.sampled_from([1 * GB, 2 * GB, 3 * GB]), st.integers(0, 1),
                          st.sampled_from([0.0, 0.25, 0.5])), min_size=1, max_size=12))
def test_settling_inline_after_a_latency_gives_the_deferred_settles_floats_once_per_instant(transfers):
    capacity = {"a": 10 * GB, "b": 4 * GB, "c": 8 * GB}
    inline, inline_settles = _timed_run(FlowNetwork, capacity, transfers)
    deferred, deferred_settles = _timed_run(_AlwaysDeferredNetwork, capacity, transfers)
    assert inline == deferred  # the same floats: the inline settle runs where the deferred one would
    assert inline_settles == deferred_settles
    assert len(set(inline_settles)) == len(inline_settles)  # one settle per instant with starts or ends
