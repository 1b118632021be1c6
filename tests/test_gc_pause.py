"""rpsim.gc_pause: the cyclic collector is off inside the block, back to its state after it (also after an
error), nested blocks leave it off, and `collect` frees the cycles the block left."""
from __future__ import annotations

import gc
import weakref

import pytest

from rpsim.gc_pause import gc_paused


class Node:
    pass


def test_off_inside_restored_after_even_on_error():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block does not switch it back on
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled_but_collects_when_asked():
    gc.disable()
    try:
        with gc_paused(collect=True):
            a = Node()
            a.self = a
            alive = weakref.ref(a)
            del a
        assert not gc.isenabled()
        assert alive() is None
    finally:
        gc.enable()


def test_collect_frees_the_cycles_left_inside():
    with gc_paused(collect=True):
        a = Node()
        a.self = a  # a reference cycle: only the cyclic collector frees it
        alive = weakref.ref(a)
        del a
        assert alive() is not None
    assert alive() is None
