"""`FlowNetwork`: byte transfers over shared links as a fluid simulation inside a SimPy environment.

Between events every active flow moves at the rate max-min sharing gives it. Each flow keeps its own
clock: the bytes it had left when its rate last changed, and when that was, hence its projected finish.
The flows one `start_flows` call starts (a host copy's per-socket shares) are kept as one bundle: one
object, one entry in the rate tracker, a clock per share; a share that finishes first leaves it.
An arrival or a completion recomputes the rates of the flows it can affect (`IncrementalRates`), moves
the clocks of those whose rate changed, and schedules one wake-up at the earliest projected finish;
older wake-ups carry an older generation number and are ignored. No Python loop walks all active flows
per event (the earliest finish is a scan in C). Owns link-utilisation counters too, kept the same lazy way.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter

import simpy

from rpsim.errors import SpecError, choices_message
from rpsim.sim.busy_log import BusyLogEntry, busy_s_from_log
from rpsim.sim.incremental_sharing import IncrementalRates
from rpsim.sim.live_flow import LiveFlow as _LiveFlow
from rpsim.sim.live_flow import left_at as _left_at
from rpsim.sim.network_checks import check_network as _check_network
from rpsim.sim.sharing import DuplexPair, Links
from rpsim.sim.timer import timer

# Float rounding: a flow's bytes left are projected from its last rate change, so at its wake-up it can
# be a few ulps short of zero. Below either bound it is done (1e-3 bytes is far below any real transfer).
_DONE_FRACTION = 1e-9
_DONE_BYTES = 1e-3


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
        # When flows (shares) started, left, and metrics were synced: busy_s replays it on read, so that no
        # per-resource count moves per event (one append instead; the same float sums as counting live).
        self._busy_log: list[BusyLogEntry] = []
        self._completed_bytes: dict[tuple[str, ...], float] = {}  # bytes of the finished flows, per path
        self._synced_s = env.now  # bytes_through counts the active flows' bytes up to here
        self.n_completed = 0
        self._flows: dict[int, _LiveFlow] = {}  # insertion order = start order
        self._next_flow_id = 0
        self._next_seq = 0
        self._generation = 0
        self._wake_s = math.inf  # the pending wake-up of the current generation
        self._settle_pending = False
        self._rates = IncrementalRates(Links.of(self.capacity_bytes_per_s, self.duplex_pairs, duplex_factor))
        self._known_paths: set[tuple[str, ...]] = set()
        self._known_path_sets: set[tuple[tuple[str, ...], ...]] = set()
        self._tiny_started: list[_LiveFlow] = []  # started since the last completion check, (next to) empty
        self._crossings_of: dict[tuple[tuple[str, ...], ...], tuple[tuple[str, int], ...]] = {}

    @property
    def bytes_through(self) -> dict[str, float]:
        """Bytes that crossed each resource: every finished flow's, and what the active flows moved up to
        the last `sync_metrics` (a flow's bytes are summed once it is done, so totals are exact sums)."""
        through = dict.fromkeys(self.capacity_bytes_per_s, 0.0)
        for path, n_bytes in self._completed_bytes.items():
            for resource in path:
                through[resource] += n_bytes
        for flow in self._flows.values():
            for share, path in enumerate(flow.paths):
                moved_bytes = flow.share_bytes - _left_at(flow, share, self._synced_s)
                for resource in path:
                    through[resource] += moved_bytes
        return through

    @property
    def busy_s(self) -> dict[str, float]:
        """Time each resource carried at least one active flow, up to the last `sync_metrics`."""
        return busy_s_from_log(self.capacity_bytes_per_s, self._busy_log)

    @property
    def active_flows(self) -> int:
        """Flows (shares) past their latency and not yet done."""
        return sum(len(flow.paths) for flow in self._flows.values())

    def transfer(self, path: tuple[str, ...], n_bytes: float, priority: int = 1,
                 latency_s: float = 0.0) -> simpy.Event:
        """An event that succeeds once all `n_bytes` crossed `path`; the flow starts after `latency_s`.

        Priority 0 is the most urgent class. Zero bytes or an empty path take the latency only.
        """
        path = tuple(path)
        if n_bytes == 0 or not path:
            self._check_transfer(path, n_bytes, latency_s)
            return self.env.timeout(latency_s)
        done = self.env.event()
        self.start_flows([path], n_bytes, priority, latency_s, lambda: done.succeed())
        return done

    def transfers(self, paths: Sequence[tuple[str, ...]], n_bytes: float, priority: int = 1,
                  latency_s: float = 0.0) -> list[simpy.Event]:
        """`transfer(path, ...)` for each path in order, with one latency timer for all: it starts the flows
        exactly as back-to-back timers for one instant would (nothing runs between those), one event
        instead of one per flow."""
        tuples = [tuple(path) for path in paths]
        if n_bytes == 0 or not all(tuples) or latency_s <= 0:
            return [self.transfer(path, n_bytes, priority, latency_s) for path in tuples]
        events = [self.env.event() for _ in tuples]
        for path, event in zip(tuples, events):
            self._check_transfer(path, n_bytes, latency_s)
        flows = [self._new_flow((path,), n_bytes, priority, event.succeed) for path, event in zip(tuples, events)]
        timer(self.env, latency_s, lambda _event: self._start_after_latency(flows))
        return events

    def start_flows(self, paths: Sequence[tuple[str, ...]], n_bytes: float, priority: int, latency_s: float,
                    done: Callable[[], None]) -> None:
        """One flow of `n_bytes` on each of `paths`, all started after `latency_s` (one timer); `done()` is
        called when the last of them has finished, or after the latency when there is nothing to move.
        The callback form of `transfers`: no SimPy event per flow, and the flows are one bundle (one
        object to keep, each path still its own flow of the sharing)."""
        if not isinstance(paths, tuple):
            paths = tuple(paths)
        if paths not in self._known_path_sets:  # the topology hands out a few dozen tuples of paths
            for path in paths:
                self._check_transfer(path, n_bytes, latency_s)
            self._known_path_sets.add(paths)
        elif not (0 <= n_bytes < math.inf and 0 <= latency_s < math.inf):
            self._check_transfer(paths[0], n_bytes, latency_s)
        if n_bytes > 0 and not all(paths):  # an empty path takes the latency only: the others end later
            paths = [path for path in paths if path]
        if n_bytes == 0 or not paths:
            timer(self.env, latency_s, lambda _event: done())
            return
        flows = [self._new_flow(tuple(paths), n_bytes, priority, done)]
        if latency_s > 0:
            timer(self.env, latency_s, lambda _event: self._start_after_latency(flows))
        else:
            self._start_all(flows)

    def _start_after_latency(self, flows: list[_LiveFlow]) -> None:
        """Start `flows` from their latency timer's callback (the timer's only one). When no settle is pending
        and no other event is queued for this instant, the settle `_start_all` would request is the very next
        event: run it here instead (the same computation at the same point of the event order, and the
        same floats, one SimPy event fewer)."""
        queue = self.env._queue  # noqa: SLF001 (SimPy's heap of (time, priority, id, event))
        if self._settle_pending or (queue and queue[0][0] <= self.env._now):  # noqa: SLF001
            self._start_all(flows)
        else:
            self._start_all(flows, settle=False)
            self._settle(None)

    def _new_flow(self, paths: tuple[tuple[str, ...], ...], n_bytes: float, priority: int,
                  done: Callable[[], None]) -> _LiveFlow:
        k = len(paths)
        flow = _LiveFlow(self._next_flow_id, paths, priority, n_bytes, done,
                         max(_DONE_BYTES, _DONE_FRACTION * n_bytes), [n_bytes] * k, [0.0] * k, [math.inf] * k,
                         [math.inf] * k)
        self._next_flow_id += 1
        return flow

    def sync_metrics(self) -> None:
        """Bring `bytes_through` and `busy_s` up to env.now (they otherwise move only when a flow ends)."""
        self._synced_s = self.env.now
        self._busy_log.append((self._synced_s, None, 0))

    def _start_all(self, flows: list[_LiveFlow], settle: bool = True) -> None:
        """Start `flows` now; `settle`: request the settle that rates them (else the caller runs it)."""
        now_s = self.env._now  # noqa: SLF001 (the property costs a Python call; this runs per event)
        live, busy_log, crossings_of = self._flows, self._busy_log, self._crossings_of
        seq = self._next_seq
        for flow in flows:
            flow.since_s = [now_s] * len(flow.paths)
            flow.seq = seq
            seq += 1
            live[flow.flow_id] = flow
            crossings = crossings_of.get(flow.paths)  # (_crossings' lookup, inline: once per start)
            if crossings is None:
                crossings = self._crossings(flow.paths)
            flow.crossings = crossings
            busy_log.append((now_s, crossings, 1))
            if flow.share_bytes <= _DONE_BYTES:
                self._tiny_started.append(flow)
        self._next_seq = seq
        self._rates.start_all(flows)
        if settle and not self._settle_pending:  # (see _request_settle)
            self._settle_pending = True
            timer(self.env, 0, self._settle)

    def _crossings(self, paths: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, int], ...]:
        """(resource, how many of `paths` cross it), for a bundle's active-flow counts."""
        crossings = self._crossings_of.get(paths)
        if crossings is None:
            counts: dict[str, int] = {}
            for path in paths:
                for resource in path:
                    counts[resource] = counts.get(resource, 0) + 1
            crossings = self._crossings_of[paths] = tuple(counts.items())
        return crossings

    def _request_settle(self) -> None:
        # A zero-delay event runs after the events already queued for this instant, so processes woken
        # by a completion can start their next transfer before the rates are recomputed once for all.
        if not self._settle_pending:
            self._settle_pending = True
            timer(self.env, 0, self._settle)

    def _settle(self, _event: simpy.Event | None) -> None:
        """Complete what is done now, re-rate the flows the changes since the last settle affect, restart
        the clocks of those whose rates changed, and schedule the wake-up at the earliest finish. One frame
        for what runs on every settle (~1.2 per action): the tracker's whole-mix hit hands back every
        active flow with its stored rates, and the comparison with the rates the clock runs at is here."""
        self._settle_pending = False
        live = self._flows
        now_s = self.env._now  # noqa: SLF001 (the property costs a Python call; this runs per event)
        if self._tiny_started or (live and min(map(_done_from_of, live.values())) <= now_s):
            self._complete_finished()  # (the same test first, inline: usually no flow is done)
        if not live:
            return  # what the tracker marked stale has no flow left: its next settle finds nothing there
        for flow, rates in self._rates.settle_covering():
            old_rates = flow.rates  # type: ignore[attr-defined]
            if old_rates == rates:
                continue  # (a whole-mix hit lists every active flow: most keep their rates)
            left, since, finish, done_from = flow.left_bytes, flow.since_s, flow.finish, flow.done_from  # type: ignore[attr-defined]
            within = flow.done_within_bytes  # type: ignore[attr-defined]
            if not old_rates:  # started at this instant (a settle follows each start at once): nothing moved
                for i, rate in enumerate(rates):
                    if rate > 0:
                        left_bytes = left[i]
                        since[i] = now_s
                        finish[i] = now_s + left_bytes / rate
                        done_from[i] = now_s + (left_bytes - within) / rate
            else:
                for i, rate in enumerate(rates):
                    old_rate = old_rates[i]
                    if rate == old_rate:
                        continue
                    # Restart the share's clock: what it moved at the old rate since its last change is gone.
                    left_bytes = left[i]
                    elapsed_s = now_s - since[i]
                    if elapsed_s > 0:  # (re-rated at its start instant: nothing moved)
                        left_bytes -= old_rate * elapsed_s
                        if left_bytes < 0.0:  # max(left_bytes, 0.0) without the builtin call
                            left_bytes = 0.0
                        left[i] = left_bytes
                    since[i] = now_s
                    if rate > 0:
                        finish[i] = now_s + left_bytes / rate
                        done_from[i] = now_s + (left_bytes - within) / rate
                    else:
                        finish[i] = done_from[i] = math.inf
            flow.rates = rates  # type: ignore[attr-defined]
            flow.finish_s = min(finish)  # type: ignore[attr-defined]
            flow.done_from_s = min(done_from)  # type: ignore[attr-defined]
        # _schedule_wake, inline
        finish_s = min(map(_finish_of, live.values()))
        if finish_s == math.inf or finish_s == self._wake_s:
            return
        self._generation += 1
        self._wake_s = finish_s
        timer(self.env, max(finish_s - now_s, 0.0), self._on_wake, self._generation)

    def _on_wake(self, event: simpy.Event) -> None:
        if event._value != self._generation:  # noqa: SLF001 (.value checks the event was triggered)
            return  # rates changed after this wake-up was scheduled
        self._wake_s = math.inf
        if self._complete_finished():
            self._request_settle()
        else:
            self._schedule_wake()  # woken a few ulps early: wait for the rest

    def _complete_finished(self) -> int:
        """Complete the flows (shares) done at env.now, in start order; how many shares."""
        now_s = self.env._now  # noqa: SLF001
        # Started since the last check, so not rated yet: done at once only if (next to) empty.
        finished = self._tiny_started
        if finished:
            self._tiny_started = []
        live = self._flows
        if live and min(map(_done_from_of, live.values())) <= now_s:  # the scan in C: usually none is done
            finished = finished + [flow for flow in live.values() if flow.done_from_s <= now_s]
        if not finished:
            return 0
        if len(finished) > 1:
            finished.sort(key=_start_order)
        ended, n_shares = [], 0
        completed_bytes, busy_log = self._completed_bytes, self._busy_log
        for flow in finished:
            share_bytes = flow.share_bytes
            if share_bytes <= _DONE_BYTES or max(flow.done_from) <= now_s:  # every share is done
                keep = None
                leaving = flow.paths
                crossings = flow.crossings
            else:
                keep = [i for i, t in enumerate(flow.done_from) if t > now_s]
                leaving = tuple([path for i, path in enumerate(flow.paths) if i not in keep])
                crossings = self._crossings(leaving)
            for path in leaving:
                completed_bytes[path] = completed_bytes.get(path, 0.0) + share_bytes
            busy_log.append((now_s, crossings, -1))
            n_shares += len(leaving)
            if keep:  # the other shares go on: they keep the flow's place in start order
                self._rates.drop_shares(flow, keep)
                flow.paths = tuple([flow.paths[i] for i in keep])
                flow.crossings = self._crossings(flow.paths)
                flow.left_bytes = [flow.left_bytes[i] for i in keep]
                flow.since_s = [flow.since_s[i] for i in keep]
                flow.finish = [flow.finish[i] for i in keep]
                flow.done_from = [flow.done_from[i] for i in keep]
                if flow.rates:
                    flow.rates = tuple([flow.rates[i] for i in keep])
                flow.finish_s, flow.done_from_s = min(flow.finish), min(flow.done_from)
            else:
                ended.append(flow)
        self._rates.end_all(ended)
        for flow in ended:
            del live[flow.flow_id]
        self.n_completed += n_shares
        for flow in ended:
            flow.done()
        return n_shares

    def _schedule_wake(self) -> None:
        """One wake-up at the earliest projected finish (found by a scan in C: nearly every settle changes
        most rates, which would leave a heap mostly stale entries)."""
        live = self._flows
        if not live:
            return
        finish_s = min(map(_finish_of, live.values()))
        if finish_s == math.inf or finish_s == self._wake_s:
            return  # every flow starved (positive capacities rule it out), or that wake-up is pending
        self._generation += 1
        self._wake_s = finish_s
        now_s = self.env._now  # noqa: SLF001
        timer(self.env, max(finish_s - now_s, 0.0), self._on_wake, self._generation)

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


_start_order = attrgetter("seq")
_finish_of = attrgetter("finish_s")
_done_from_of = attrgetter("done_from_s")
