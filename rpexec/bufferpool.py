"""Host buffers that are allocated once and reused across actions and iterations.

Pinned allocations (cudaHostAlloc) are slow and page in every byte; freshly malloc'd pageable buffers
fault their pages in on first touch. Both showed up as 10-40x slowdowns of OFFLOAD and STEP in the first
measured traces (benchmarks/notes-rpexec.md). A buffer goes back to the pool with an optional guard (a
CUDA event recorded after the last asynchronous copy that reads it); it is handed out again only once
the guard has completed, so a reused buffer is never overwritten while a copy engine still reads it."""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import torch

from rpexec.host_arena import HostArena

Key = tuple[tuple[int, ...], torch.dtype]


class BufferPool:
    def __init__(self, pin: bool, arena: HostArena | None = None) -> None:
        self.pin = pin
        # buffers are never freed (host_arena); pinned pools keep a slab pinned ahead for growth mid-run
        self.arena = arena if arena is not None else HostArena(pin, spare_ahead=pin)
        self._free: dict[Key, list[tuple[torch.Tensor, Any]]] = defaultdict(list)
        self._lock = threading.Lock()
        self.allocated_bytes = 0  # every byte this pool ever allocated (its high-water mark)

    def acquire(self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        key = (tuple(shape), dtype)
        with self._lock:
            free = self._free[key]
            for i, (t, guard) in enumerate(free):
                if guard is None or guard.query():
                    del free[i]
                    return t
            self.allocated_bytes += _nbytes(key)
        return self.arena.empty(key[0], dtype)

    def reserve(self, counts: dict[Key, int]) -> None:
        """Allocate buffers up front so that `counts[key]` of each are free (warm-up, rpexec.warmup)."""
        for key, n in counts.items():
            key = (tuple(key[0]), key[1])
            with self._lock:
                missing = n - len(self._free[key])
                self.allocated_bytes += max(0, missing) * _nbytes(key)
            for _ in range(max(0, missing)):
                t = self.arena.empty(key[0], key[1])
                t.view(-1)[::max(1, 4096 // t.element_size())].zero_()  # touch every page now, not in a copy
                self.release(t)

    def release(self, t: torch.Tensor, guard: Any = None) -> None:
        with self._lock:
            self._free[(tuple(t.shape), t.dtype)].append((t, guard))


def _nbytes(key: Key) -> int:
    n = 1
    for d in key[0]:
        n *= d
    return n * torch.empty((), dtype=key[1]).element_size()
