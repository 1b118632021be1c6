"""`FlowNetwork`: byte transfers over shared links as a fluid simulation inside a SimPy environment.

Between events every active flow moves at the rate max-min sharing gives it. Each arrival or completion
advances all flows, recomputes the rates of the flows it can affect (`IncrementalRates`) and schedules
one wake-up at the earliest completion; older wake-ups carry an older generation number and are ignored. Owns link-utilisation counters too.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import simpy

from rpsim.errors import SpecError, choices_message
from rpsim.sim.incremental_sharing import IncrementalRates
from rpsim.sim.sharing import DuplexPair, Links

# Float drift: remaining bytes are decremented by rate * elapsed many times, so a flow can end a few ulps
# short of zero. Below either bound it is done (1e-3 bytes is far below any real transfer).
_DONE_FRACTION = 1e-9
_DONE_BYTES = 1e-3


@dataclass(slots=True, eq=False)
class _LiveFlow:
    flow_id: int
    path: tuple[str, ...]
    priority: int
    n_bytes: float
    remaining_bytes: float
    done: simpy.Event
    rate_bytes_per_s: float = 0.0


class FlowNetwork:
    """Resources (links, DRAM, ...) with capacities in bytes/s, shared by the flows crossing them.

    Ties are deterministic: flows finishing at the same instant succeed in the order they started (the
    order of `transfer` calls, for equal latencies), and all arrivals and completions of one instant
    share one rate computation, made after the processes resumed at that instant have run.
    """

    def __init__(
        self,
        env: simpy.Environment,
        capacity_bytes_per_s: Mapping[str, float],
        duplex_pairs: Iterable[DuplexPair] = (),
        duplex_factor: float = 1.0,
    ) -> None:
        self.env = env
        self.capacity_bytes_per_s = dict(capacity_bytes_per_s)
        self.duplex_pairs = tuple(duplex_pairs)
        self.duplex_factor = duplex_factor
        _check_network(self.capacity_bytes_per_s, self.duplex_pairs, duplex_factor)
        self.bytes_through: dict[str, float] = dict.fromkeys(self.capacity_bytes_per_s, 0.0)
        self.busy_s: dict[str, float] = dict.fromkeys(self.capacity_bytes_per_s, 0.0)  # >= 1 active flow
        self.n_completed = 0
        self._flows: dict[int, _LiveFlow] = {}  # insertion order = start order
        self._n_active_on: dict[str, int] = {}  # resources with no active flow are absent
        self._next_flow_id = 0
        self._generation = 0
        self._settle_pending = False
        self._last_update_s = env.now
        self._rates = IncrementalRates(Links.of(self.capacity_bytes_per_s, self.duplex_pairs, duplex_factor))
        self._known_paths: set[tuple[str, ...]] = set()
        # (now, generation) of the last completion check, and flows started since: until time or rates
        # move, the flows checked then cannot have become done, so a second check looks at new ones only.
        self._checked_at: tuple[float, int] | None = None
        self._started_since: list[_LiveFlow] = []

    @property
    def active_flows(self) -> int:
        """Flows past their latency and not yet done."""
        return len(self._flows)

    def transfer(self, path: tuple[str, ...], n_bytes: float, priority: int = 1,
                 latency_s: float = 0.0) -> simpy.Event:
        """An event that succeeds once all `n_bytes` crossed `path`; the flow starts after `latency_s`.

        Priority 0 is the most urgent class. Zero bytes or an empty path take the latency only.
        """
        path = tuple(path)
        self._check_transfer(path, n_bytes, latency_s)
        if n_bytes == 0 or not path:
            return self.env.timeout(latency_s)
        flow = self._new_flow(path, n_bytes, priority)
        if latency_s > 0:
            self.env.timeout(latency_s).callbacks.append(lambda _event: self._start(flow))  # type: ignore[union-attr]
        else:
            self._start(flow)
        return flow.done

    def transfers(self, paths: Sequence[tuple[str, ...]], n_bytes: float, priority: int = 1,
                  latency_s: float = 0.0) -> list[simpy.Event]:
        """`transfer(path, ...)` for each path in order, with one latency timer for all: it starts the flows
        exactly as back-to-back timers for one instant would (nothing runs between those), one event
        instead of one per flow."""
        tuples = [tuple(path) for path in paths]
        if n_bytes == 0 or not all(tuples) or latency_s <= 0:
            return [self.transfer(path, n_bytes, priority, latency_s) for path in tuples]
        for path in tuples:
            self._check_transfer(path, n_bytes, latency_s)
        flows = [self._new_flow(path, n_bytes, priority) for path in tuples]
        self.env.timeout(latency_s).callbacks.append(lambda _event: self._start_all(flows))  # type: ignore[union-attr]
        return [flow.done for flow in flows]

    def _new_flow(self, path: tuple[str, ...], n_bytes: float, priority: int) -> _LiveFlow:
        flow = _LiveFlow(self._next_flow_id, path, priority, n_bytes, n_bytes, self.env.event())
        self._next_flow_id += 1
        return flow

    def sync_metrics(self) -> None:
        """Bring `bytes_through` and `busy_s` up to env.now (they otherwise move only at flow events)."""
        self._advance()

    def _start_all(self, flows: list[_LiveFlow]) -> None:
        for flow in flows:
            self._start(flow)

    def _start(self, flow: _LiveFlow) -> None:
        self._advance()  # elapsed time belongs to the flows already running
        self._flows[flow.flow_id] = flow
        self._started_since.append(flow)
        self._rates.start(flow)
        for resource in flow.path:
            self._n_active_on[resource] = self._n_active_on.get(resource, 0) + 1
        self._request_settle()

    def _request_settle(self) -> None:
        # A zero-delay event runs after the events already queued for this instant, so processes woken
        # by a completion can start their next transfer before the rates are recomputed once for all.
        if not self._settle_pending:
            self._settle_pending = True
            self.env.timeout(0).callbacks.append(self._settle)

    def _settle(self, _event: simpy.Event) -> None:
        self._settle_pending = False
        self._advance()
        self._complete_finished()
        self._reallocate()

    def _on_wake(self, event: simpy.Event) -> None:
        if event.value != self._generation:
            return  # rates changed after this wake-up was scheduled
        self._advance()
        self._complete_finished()
        self._request_settle()

    def _advance(self) -> None:
        now_s = self.env.now
        elapsed_s = now_s - self._last_update_s
        if elapsed_s <= 0:
            return
        self._last_update_s = now_s
        bytes_through = self.bytes_through
        for flow in self._flows.values():
            rate = flow.rate_bytes_per_s
            if rate > 0:  # starved flows (rate 0) move nothing
                moved_bytes = min(rate * elapsed_s, flow.remaining_bytes)
                if moved_bytes > 0:
                    flow.remaining_bytes -= moved_bytes
                    for resource in flow.path:
                        bytes_through[resource] += moved_bytes
        busy_s = self.busy_s
        for resource in self._n_active_on:
            busy_s[resource] += elapsed_s

    def _complete_finished(self) -> None:
        now_s = self.env.now
        checked_at, self._checked_at = self._checked_at, (now_s, self._generation)
        # New flows sit at the end of _flows (start order), so either way `finished` is in start order.
        candidates = self._started_since if checked_at == self._checked_at else self._flows.values()
        finished = [flow for flow in candidates if _is_done(flow, now_s)]
        self._started_since = []
        for flow in finished:
            del self._flows[flow.flow_id]
            self._rates.end(flow)
            for resource in flow.path:
                self.bytes_through[resource] += flow.remaining_bytes  # the drift residual, so totals are exact
                self._n_active_on[resource] -= 1
                if not self._n_active_on[resource]:
                    del self._n_active_on[resource]
            flow.remaining_bytes = 0.0
            self.n_completed += 1
            flow.done.succeed()

    def _reallocate(self) -> None:
        self._generation += 1
        if not self._flows:
            return  # what the tracker marked stale has no flow left: its next settle finds nothing there
        for flow, rate in self._rates.settle():
            flow.rate_bytes_per_s = rate  # type: ignore[attr-defined]
        next_s = math.inf
        for flow in self._flows.values():
            rate = flow.rate_bytes_per_s
            if rate > 0:
                next_s = min(next_s, flow.remaining_bytes / rate)
        if next_s < math.inf:  # else every flow is starved, which positive capacities rule out
            self.env.timeout(next_s, value=self._generation).callbacks.append(self._on_wake)

    def _check_transfer(self, path: tuple[str, ...], n_bytes: float, latency_s: float) -> None:
        if path not in self._known_paths:  # a simulation reuses a few dozen paths thousands of times
            for resource in path:
                if resource not in self.capacity_bytes_per_s:
                    raise SpecError(choices_message("resource", resource, self.capacity_bytes_per_s))
            self._known_paths.add(path)
        if not (0 <= n_bytes < math.inf):
            raise SpecError(f"n_bytes must be finite and >= 0, got {n_bytes!r}")
        if not (0 <= latency_s < math.inf):
            raise SpecError(f"latency_s must be finite and >= 0, got {latency_s!r}")


def _is_done(flow: _LiveFlow, now_s: float) -> bool:
    left_bytes = flow.remaining_bytes
    if left_bytes <= _DONE_BYTES or left_bytes <= _DONE_FRACTION * flow.n_bytes:
        return True
    # A finish time the clock cannot tell from now would wake us at now forever.
    rate = flow.rate_bytes_per_s
    return rate > 0 and now_s + left_bytes / rate <= now_s


def _check_network(capacity_bytes_per_s: dict[str, float], duplex_pairs: tuple[DuplexPair, ...],
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
