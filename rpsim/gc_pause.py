"""Python's cyclic garbage collector, paused for the duration of a command.

Building and simulating a plan allocates millions of small, long-lived, acyclic objects (actions,
dependency-graph dicts, trace events). Every time the survivors grow by a quarter the collector rescans
all of them (a full collection), which was 20-45% of `rpsim compare` and of make_plan on 64 GPUs.
Those objects are freed by reference counting alone; the few reference cycles a command leaves (about
600 objects after a full `compare`, the same peak RSS) wait for the next collection after it. Results do
not depend on when memory is reclaimed, so no figure changes."""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused(collect: bool = False) -> Iterator[None]:
    """Collector off inside the block (nested blocks leave it off), back on after it. `collect`: one full
    collection right after, for long-lived processes that run many blocks (search workers): a plan's
    dependency graph whose networkx views were used (graph.pred) is a reference cycle, and a worker
    estimating dozens of plans with the collector off grew to 1.3 GB."""
    if not gc.isenabled():  # paused further out (an `rpsim` command): still collect when asked
        try:
            yield
        finally:
            if collect:
                gc.collect()
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        if collect:
            gc.collect()
