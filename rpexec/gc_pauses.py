"""Python's cyclic garbage collector during a run: the heap that exists before iteration 0 is frozen, and
every collection inside the run is logged.

Why: a collection stops every thread that needs the GIL, and rpexec's lane threads need it to issue each
copy. The compute lanes are issued far ahead of their GPU and ride out a pause; the transfer lanes that
wait on the host for a memory window are issued just in time, so a pause there can land on the GPU's
critical path. The objects that exist before the run (the plan, its dependency graph with a dict per
edge, the modules, the host tensors' wrappers) make an oldest-generation collection long: ~190K objects
for the 2.8B benchmark plan alone, a full collection of 0.18 s on the 2-core CI machine. They live for
the whole run, so scanning them finds nothing. `gc.freeze()` (the `gc` module docs, Python 3.7+) moves
them to a permanent generation that collections ignore. Megatron-LM's `--manual-gc` answers the same kind
of straggler by turning the collector off; rpexec keeps it on (a cycle made inside the run is still freed).

Measured (2x H200, 2.8B, benchmarks/notes-rpexec.md session 11): every unfrozen run had one steady
iteration 0.25-0.47 s long, and the frozen runs none (one same-lease A/B: 3.217 against 3.062 s); but
the unfrozen run's log shows no collection at its stall, so what the freeze (or the collection before
it) removes is not pinned down.

The log (`GcLog.pauses`) holds every collection of at least `min_s`, so a measured trace shows whether
one fell on a stall."""
from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class GcLog:
    min_s: float = 0.001
    pauses: list[dict] = field(default_factory=list)  # {"generation", "at", "s", "collected"}; at: perf_counter
    _started: dict[str, float] = field(default_factory=dict)

    def callback(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started["t"] = now
            return
        began = self._started.pop("t", None)
        if began is not None and now - began >= self.min_s:
            self.pauses.append({"generation": info.get("generation"), "at": began, "s": now - began,
                                "collected": info.get("collected")})

    def summary(self, t0_s: float) -> dict:
        """Pauses with their start in seconds from `t0_s` (a perf_counter: the trace's host zero)."""
        pauses = [{"generation": p["generation"], "at_s": p["at"] - t0_s, "s": p["s"], "collected": p["collected"]}
                  for p in self.pauses]
        return {"pauses": pauses, "total_s": sum(p["s"] for p in pauses),
                "longest_s": max((p["s"] for p in pauses), default=0.0)}


@contextmanager
def collector_for_run(freeze: bool = True, min_s: float = 0.001) -> Iterator[GcLog]:
    """Inside the block: the heap made before it frozen (when `freeze`), every collection logged. The
    heap is unfrozen after, so a process running many plans (the tests) collects them as usual."""
    log = GcLog(min_s)
    if freeze:
        gc.collect()
        gc.freeze()
    gc.callbacks.append(log.callback)
    try:
        yield log
    finally:
        gc.callbacks.remove(log.callback)
        if freeze:
            gc.unfreeze()
