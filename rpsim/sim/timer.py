"""`timer`: a SimPy Timeout scheduled without SimPy's per-event Python layers.

`env.timeout(delay, value)` goes through a bound-class call, Timeout.__init__ and Environment.schedule
before it pushes (time, NORMAL, next id, event) onto the queue; with a callback appended after. The
engine and the flow network make one to four of these per action (~10^5 per run), so `timer` builds the
same Timeout and pushes the same entry directly: the same event at the same point of the event order
(the id comes from the same counter), only fewer Python frames. Callers keep delays >= 0 (what
Timeout.__init__ would check). Relies on simpy 4's Environment fields `_queue`, `_now` and `_eid`, as
rpsim.sim.network already reads `_queue` and `_now`.
"""
from __future__ import annotations

from collections.abc import Callable
from heapq import heappush
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
