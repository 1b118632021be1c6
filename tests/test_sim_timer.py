"""rpsim.sim.timer: the same Timeouts as env.timeout, at the same points of SimPy's event order; run_events
processes what env.run would, in its order, and stops where it stops."""
from __future__ import annotations

import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.sim.timer import run_events, timer

# (delay, use timer): delays drawn from few values so that many events tie in time, where only the
# queue's priority and id counter order them.
_SCHEDULES = st.lists(st.tuples(st.sampled_from([0.0, 0.5, 1.0, 2.5]), st.booleans()), min_size=1, max_size=30)


def _firing_order(schedule: list[tuple[float, bool]], use_timer: bool, loop: str = "env.run",
                  stop_at: int | None = None) -> list[tuple[int, float, object]]:
    """(index, time, value) of each event as it fires; events fired at the first instant schedule more.
    `loop`: env.run or run_events; `stop_at`: the run stops once event `stop_at` has been processed (its
    own callback, appended before the run's stop, runs; later events do not)."""
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

    until = None
    for k, (delay_s, via_timer) in enumerate(schedule):
        if k == stop_at:
            until = env.timeout(delay_s, value=k)
            until.callbacks.append(lambda event: fired.append((-1, env.now, event.value)))  # type: ignore[union-attr]
        else:
            make(k, delay_s, via_timer)
    if loop == "env.run":
        env.run(until=until)
    else:
        run_events(env, until)
    if until is not None:  # where the run stopped
        fired.append((-2, env.now, None))
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


@settings(max_examples=200, deadline=None)
@given(_SCHEDULES, st.integers(0, 40))
def test_run_events_processes_what_env_run_would_and_stops_where_it_stops(schedule: list[tuple[float, bool]],
                                                                          stop_at: int) -> None:
    until = stop_at if stop_at < len(schedule) else None
    assert (_firing_order(schedule, True, "run_events", until)
            == _firing_order(schedule, True, "env.run", until))


def test_run_events_raises_a_failed_event_as_env_run_does() -> None:
    env = simpy.Environment()

    def lane():  # type: ignore[no-untyped-def]
        yield timer(env, 1.0)
        raise ValueError("lane failed")

    env.process(lane())
    try:
        run_events(env)
    except ValueError as e:
        assert str(e) == "lane failed" and env.now == 1.0
    else:
        raise AssertionError("run_events swallowed the failure")
