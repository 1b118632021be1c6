"""rpexec.gc_pauses: the heap made before a run is frozen for it and unfrozen after, and every
collection inside the run is logged against the trace's host clock."""
from __future__ import annotations

import gc
import time

from rpexec.gc_pauses import collector_for_run


def test_heap_is_frozen_inside_and_unfrozen_after():
    before = gc.get_freeze_count()
    keep = [[i] for i in range(1000)]  # objects made before the run
    with collector_for_run(freeze=True):
        assert gc.get_freeze_count() >= len(keep)
    assert gc.get_freeze_count() == before
    with collector_for_run(freeze=False):
        assert gc.get_freeze_count() == before


def test_collections_inside_the_run_are_logged_from_the_run_start():
    t0 = time.perf_counter()
    with collector_for_run(freeze=True, min_s=0.0) as log:
        cycle = []
        cycle.append(cycle)  # a reference cycle made inside the run is still collected
        del cycle
        gc.collect()
    summary = log.summary(t0)
    full = [p for p in summary["pauses"] if p["generation"] == 2]
    assert full and full[-1]["collected"] >= 1
    assert all(0.0 <= p["at_s"] <= time.perf_counter() - t0 and p["s"] >= 0 for p in summary["pauses"])
    assert summary["total_s"] == sum(p["s"] for p in summary["pauses"]) >= summary["longest_s"]
    n = len(log.pauses)
    gc.collect()  # after the block the callback is gone
    assert len(log.pauses) == n
