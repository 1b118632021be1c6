"""rpsim.sim.timer: the same Timeouts as env.timeout, at the same points of SimPy's event order."""
from __future__ import annotations

import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.sim.timer import timer

# (delay, use timer): delays drawn from few values so that many events tie in time, where only the
# queue's priority and id counter order them.
_SCHEDULES = st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.5]), st.booleans()), min_size=1, max_size=30)


def _firing_order(schedule: list[tuple[float, bool]], use_timer: bool) -> list[tuple[int, float, object]]:
    """(index, time, value) of each event as it fires; events fired at the first instant schedule more."""
    env = simpy.Environment()
    fired: list[tuple[int, float, object]] = []

    def make(k: int, delay_s: float, via_timer: bool) -> None:
        def record(event: simpy.Event) -> None:
            fired.append((k, env.now, event.value))
            if k < len(schedule) // 2:  # schedule another while events are being processed
                make(k + len(schedule), delay_s / 2, via_timer)

        if via_timer and use_timer:
            timer(env, delay_s, record, value=k)
        else:
            env.timeout(delay_s, value=k).callbacks.append(record)  # type: ignore[union-attr]

    for k, (delay_s, via_timer) in enumerate(schedule):
        make(k, delay_s, via_timer)
    env.run()
    return fired


@settings(max_examples=200, deadline=None)
@given(_SCHEDULES)
def test_timers_fire_where_env_timeout_would_mixed_with_timeouts(schedule: list[tuple[float, bool]]) -> None:
    assert _firing_order(schedule, use_timer=True) == _firing_order(schedule, use_timer=False)


def test_a_process_waits_on_a_timer_as_on_a_timeout() -> None:
    env = simpy.Environment()
    seen = []

    def lane():  # type: ignore[no-untyped-def]
        value = yield timer(env, 1.5, value="done")
        seen.append((env.now, value))
        yield timer(env, 0.25)
        seen.append((env.now, None))

    env.process(lane())
    env.run()
    assert seen == [(1.5, "done"), (1.75, None)]
