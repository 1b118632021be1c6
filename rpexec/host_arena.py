"""Host buffers carved from large slabs, so pinned memory costs what the tensors hold.

torch's pinned-memory allocator rounds every allocation up to the next power of two before it calls
cudaHostAlloc (ATen/core/CachingHostAllocator.h: `roundSize = c10::llvm::PowerOf2Ceil(size)`), and
cudaHostAlloc pins, and so makes resident, every byte of the rounded size. Pinning each weight copy and
each pooled buffer on its own therefore cost up to 2x: a 14B-class layer's 135 MiB MLP matrix pinned
256 MiB, and its two compute-dtype copies pinned 1,024 MiB per layer instead of 605, 33 GiB over 40
layers, which is what the host's OOM killer found when issue 15's 14B benchmark ran on a 251 GiB host
(experiments/data/rpexec-bench/bench-14b.log). Slabs whose size is itself a power of two lose nothing
to that rounding; only the unused tail of the last slab is lost.

A pool's arena can keep a spare slab pinned ahead (`spare_ahead`): pinning a 1 GiB slab takes ~0.4 s on
the H200 host (cudaHostAlloc pages in every byte), and a pool that outgrows its presized buffers inside
the run would otherwise make the lane thread that needs one more buffer wait for it, with its copy and
every action behind it. With a spare, that thread takes a ready slab and a background thread pins the
next. (Session 10 suspected such pinning of a 0.3 s steady-iteration stall at 2.8B; with the spare the
stall remained, so that stall had another cause: benchmarks/notes-rpexec.md, session 11.)

On the CPU (tests) the slabs are ordinary memory and the tensors are the same views."""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

SLAB_BYTES = 2**30
ALIGN_BYTES = 512  # DMA-friendly starts, and a multiple of every element size


def _pow2_ceil(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class HostArena:
    """Bump allocation from pinned (or, with pin=False, ordinary) slabs; nothing is freed before the arena
    is: every user of it (weight copies, buffer pools) keeps its tensors for the whole run."""

    def __init__(self, pin: bool, slab_bytes: int = SLAB_BYTES, spare_ahead: bool = False) -> None:
        if slab_bytes != _pow2_ceil(slab_bytes):
            raise ValueError(f"slab_bytes must be a power of two (the pinned allocator rounds to one), got {slab_bytes}")
        self.pin = pin
        self.slab_bytes = slab_bytes
        self._spare_maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arena-spare") if spare_ahead else None
        self._spare: Future | None = None
        self._slab: torch.Tensor | None = None
        self._used = 0
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()  # the spare is made outside _lock
        self.reserved_bytes = 0  # bytes of every slab taken (what the host holds)
        # (perf_counter at its start, seconds, bytes) of every slab made: one made inside a run is a
        # pool outgrowing its presizing there (rpexec.session records them in the trace's meta)
        self.slab_log: list[tuple[float, float, int]] = []
        self.carved_bytes = 0  # bytes of every tensor handed out

    def empty(self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised host tensor of `shape` and `dtype`, a view into a slab."""
        numel = 1
        for d in shape:
            numel *= d
        n_bytes = numel * torch.empty((), dtype=dtype).element_size()
        with self._lock:
            self.carved_bytes += n_bytes
            if n_bytes > self.slab_bytes:  # a slab of its own, a power of two again; the current one stays
                return self._new_slab(_pow2_ceil(n_bytes))[:n_bytes].view(dtype).view(tuple(shape))
            start = -(-self._used // ALIGN_BYTES) * ALIGN_BYTES
            if self._slab is None or start + n_bytes > self.slab_bytes:
                self._slab, start = self._next_slab(), 0
            self._used = start + n_bytes
            raw = self._slab[start:start + n_bytes]
        return raw.view(dtype).view(tuple(shape))

    def _next_slab(self) -> torch.Tensor:
        """A standard slab: the spare pinned ahead when there is one (then the next spare is started),
        else a new one now."""
        if self._spare_maker is None:
            return self._new_slab(self.slab_bytes)
        slab = self._spare.result() if self._spare is not None else self._new_slab(self.slab_bytes)
        self._spare = self._spare_maker.submit(self._new_slab, self.slab_bytes)
        return slab

    def _new_slab(self, n_bytes: int) -> torch.Tensor:
        t0 = time.perf_counter()
        slab = torch.empty(n_bytes, dtype=torch.uint8, pin_memory=self.pin)
        with self._count_lock:
            self.reserved_bytes += n_bytes
            self.slab_log.append((t0, time.perf_counter() - t0, n_bytes))
        return slab
