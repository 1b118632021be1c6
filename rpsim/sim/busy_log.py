"""Link utilisation replayed from a log: the network appends (time, crossings, +1) when flows start,
(time, crossings, -1) when they leave and (time, None, 0) at a metrics sync, instead of moving a count per
resource at every event (rpsim.sim.network); the busy time is summed only when someone reads it."""
from __future__ import annotations

from collections.abc import Iterable

BusyLogEntry = tuple[float, tuple[tuple[str, int], ...] | None, int]


def busy_s_from_log(resources: Iterable[str], log: Iterable[BusyLogEntry]) -> dict[str, float]:
    """Time each resource carried at least one flow, up to the last sync in `log`, replayed in log order:
    the same additions, in the same order, as counting the flows on each resource per event would make."""
    busy_s = dict.fromkeys(resources, 0.0)
    n_active_on: dict[str, int] = {}  # resources with no active flow are absent
    busy_since_s: dict[str, float] = {}  # for each resource in n_active_on
    for now_s, crossings, sign in log:
        if crossings is None:  # a sync
            for resource, since_s in busy_since_s.items():
                busy_s[resource] += now_s - since_s
                busy_since_s[resource] = now_s
        elif sign > 0:
            for resource, count in crossings:
                n = n_active_on.get(resource)
                if n:
                    n_active_on[resource] = n + count
                else:
                    n_active_on[resource] = count
                    busy_since_s[resource] = now_s
        else:
            for resource, count in crossings:
                n = n_active_on[resource] - count
                if n:
                    n_active_on[resource] = n
                else:
                    del n_active_on[resource]
                    busy_s[resource] += now_s - busy_since_s.pop(resource)
    return busy_s
