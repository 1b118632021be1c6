"""The collector around one search task that builds a whole plan (a list-timed estimate, a confirmation).

rpsim.gc_pause pauses the collector while the plan is built, so its millions of acyclic objects are not
rescanned as they grow, and frees them by reference counting as the task returns. The task may leave a
few reference cycles (a dependency graph whose networkx views were used, the engine's processes: ~20
objects measured per Qwen3-32B confirmation); they were allocated while no collection ran, so they are
all in the youngest generation, where a generation-0 collection finds them without rescanning the
worker's long-lived objects. A full collection after each task did rescan those, and cost 0.05-0.15 s
against a 0.3-1 s task on this 2-core machine. Results do not depend on when memory is reclaimed."""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from rpsim.gc_pause import gc_paused


@contextmanager
def plan_task() -> Iterator[None]:
    try:
        with gc_paused():
            yield
    finally:
        gc.collect(0)
