"""rpexec.host_arena: tensors carved from power-of-two slabs, so pinned memory costs what they hold."""
from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rpexec.bufferpool import BufferPool
from rpexec.host_arena import ALIGN_BYTES, HostArena

SHAPES = st.lists(st.lists(st.integers(1, 300), min_size=1, max_size=3), min_size=1, max_size=40)
DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8])


@settings(max_examples=60, deadline=None)
@given(shapes=SHAPES, dtype=DTYPES)
def test_carved_tensors_are_disjoint_aligned_and_hold_their_values(shapes, dtype):
    arena = HostArena(pin=False, slab_bytes=2**16)
    tensors = []
    for i, shape in enumerate(shapes):
        t = arena.empty(shape, dtype)
        assert tuple(t.shape) == tuple(shape) and t.dtype == dtype and t.is_contiguous()
        assert (t.data_ptr() - t.untyped_storage().data_ptr()) % ALIGN_BYTES == 0  # from the slab's start (page-aligned when pinned)
        t.fill_(i % 100)
        tensors.append(t)
    for i, t in enumerate(tensors):  # nothing carved later overwrote an earlier tensor
        assert bool((t == i % 100).all())
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in tensors)
    assert all(end <= start for (_, end), (start, _) in pairwise(spans))
    carved = sum(t.numel() * t.element_size() for t in tensors)
    assert arena.carved_bytes == carved <= arena.reserved_bytes


def test_slabs_are_powers_of_two_and_only_the_last_tail_is_lost():
    arena = HostArena(pin=False, slab_bytes=2**20)
    for _ in range(10):  # 10 x 300 KiB: three per slab, so four slabs
        arena.empty((300 * 1024,), torch.uint8)
    assert arena.reserved_bytes == 4 * 2**20
    big = arena.empty((3 * 2**20,), torch.uint8)  # larger than a slab: its own slab of 4 MiB
    assert big.numel() == 3 * 2**20 and arena.reserved_bytes == 8 * 2**20
    arena.empty((300 * 1024,), torch.uint8)  # still fits the current slab's tail after the big one
    assert arena.reserved_bytes == 8 * 2**20


def test_slab_size_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        HostArena(pin=False, slab_bytes=3 * 2**20)


def test_buffer_pool_carves_from_its_arena_and_reuses_released_buffers():
    pool = BufferPool(pin=False, arena=HostArena(pin=False, slab_bytes=2**20))
    a = pool.acquire((64, 64), torch.float16)
    pool.release(a)
    b = pool.acquire((64, 64), torch.float16)
    assert b.data_ptr() == a.data_ptr()  # the same buffer again, no new carving
    assert pool.allocated_bytes == pool.arena.carved_bytes == 64 * 64 * 2


def test_spare_slab_is_pinned_ahead_and_handed_out_next():
    """With spare_ahead the slab after the current one is made in the background, so the carve that
    needs a new slab takes a ready one; tensors stay disjoint and the spare is counted as held."""
    arena = HostArena(pin=False, slab_bytes=2**20, spare_ahead=True)
    tensors = [arena.empty((300 * 1024,), torch.uint8) for _ in range(7)]  # three per slab: three slabs
    arena._spare.result()  # the spare after the third slab is made
    assert arena.reserved_bytes == 4 * 2**20
    spare = arena._spare.result()
    nxt = [arena.empty((300 * 1024,), torch.uint8) for _ in range(3)]  # the third slab is full after two more
    assert nxt[-1].untyped_storage().data_ptr() == spare.untyped_storage().data_ptr()
    for i, t in enumerate(tensors + nxt):
        t.fill_(i)
    assert all(bool((t == i).all()) for i, t in enumerate(tensors + nxt))
