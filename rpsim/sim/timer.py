"""`timer`: a SimPy Timeout scheduled without SimPy's per-event Python layers; `run_events`: env.run's
loop without its per-event `step` call.

`env.timeout(delay, value)` goes through a bound-class call, Timeout.__init__ and Environment.schedule
before it pushes (time, NORMAL, next id, event) onto the queue; with a callback appended after. The
engine and the flow network make one to four of these per action (~10^5 per run), so `timer` builds the
same Timeout and pushes the same entry directly: the same event at the same point of the event order
(the id comes from the same counter), only fewer Python frames. Callers keep delays >= 0 (what
Timeout.__init__ would check). Relies on simpy 4's Environment fields `_queue`, `_now` and `_eid`, as
rpsim.sim.network already reads `_queue` and `_now`.

`run_events` pops and processes the queue's entries as `Environment.step` does, in one frame for the
whole run instead of one call per event (~4.5 events per simulated action), so every event runs at the
same point of the same order; it stops where env.run(until=event) stops, before the callbacks queued
behind the stop on that event.
"""
from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.events import NORMAL, Timeout

_new_timeout = Timeout.__new__


def timer(env: simpy.Environment, delay_s: float, callback: Callable[[simpy.Event], Any] | None = None,
          value: Any = None) -> Timeout:
    """What `t = env.timeout(delay_s, value); t.callbacks.append(callback)` makes (no callback: none)."""
    event = _new_timeout(Timeout)
    event.env = env
    event.callbacks = [] if callback is None else [callback]
    event._value = value  # noqa: SLF001 (Timeout.__init__'s fields, set as it sets them)
    event._delay = delay_s  # noqa: SLF001
    event._ok = True  # noqa: SLF001
    heappush(env._queue, (env._now + delay_s, NORMAL, next(env._eid), event))  # noqa: SLF001 (Environment.schedule)
    return event


class _Stop(Exception):
    """Raised by the `until` event's callback, as SimPy's StopSimulation is."""


def _stop(_event: simpy.Event) -> None:
    raise _Stop


def run_events(env: simpy.Environment, until: simpy.Event | None = None) -> None:
    """`env.run(until)` for `until` None or an event: process the queue in order until it is empty or
    `until` has been processed. A failed event nobody defused re-raises its exception, as `step` does."""
    if until is not None:
        if until.callbacks is None:
            return  # processed already
        until.callbacks.append(_stop)
    queue = env._queue  # noqa: SLF001
    try:
        while queue:
            env._now, _, _, event = heappop(queue)  # noqa: SLF001 (Environment.step from here on)
            callbacks, event.callbacks = event.callbacks, None
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):  # noqa: SLF001
                exc = type(event._value)(*event._value.args)  # noqa: SLF001
                exc.__cause__ = event._value  # noqa: SLF001
                raise exc
    except _Stop:
        return
    if until is not None:
        raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {until}')
