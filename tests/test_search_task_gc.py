"""rpsim.search.task_gc: the collector is off during a search task and back on after it, and the
generation-0 collection after the task frees the reference cycles it left, also when the task failed
and when the whole command runs with the collector off (a serial search)."""
from __future__ import annotations

import gc
import weakref

import pytest

from rpsim.search.task_gc import plan_task


class Node:
    pass


def _cycle() -> weakref.ref:
    a = Node()
    a.self = a  # only the cyclic collector frees it
    return weakref.ref(a)


def test_cycles_left_by_a_task_are_freed_after_it():
    gc.collect()  # an empty youngest generation, whatever ran before
    with plan_task():
        assert not gc.isenabled()
        alive = _cycle()
        assert alive() is not None
    assert gc.isenabled()
    assert alive() is None


def test_freed_after_a_failed_task():
    with pytest.raises(ValueError), plan_task():
        alive = _cycle()
        raise ValueError("boom")
    assert gc.isenabled()
    assert alive() is None


def test_under_a_paused_command_the_collector_stays_off_and_cycles_are_freed():
    gc.disable()
    try:
        with plan_task():
            alive = _cycle()
        assert not gc.isenabled()
        assert alive() is None
    finally:
        gc.enable()


def test_older_generations_are_not_collected():
    """Only the youngest generation is collected (a full collection after each task rescanned every
    long-lived object of the worker): a cycle that survived an earlier collection outlives the task."""
    gc.disable()
    try:
        a = Node()
        a.self = a
        old = weakref.ref(a)
        gc.collect(0)  # reachable from this frame: survives, promoted out of the youngest generation
        del a
        with plan_task():
            pass
        assert old() is not None
        gc.collect()
        assert old() is None
    finally:
        gc.enable()
