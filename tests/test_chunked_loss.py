"""The chunked LM-head loss equals the full-logits cross-entropy, in value and in both gradients."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings
from hypothesis import strategies as st

from rpexec.bufferpool import BufferPool
from rpexec.chunked_loss import chunked_cross_entropy


@settings(max_examples=25, deadline=None)
@given(tokens=st.integers(1, 40), vocab=st.integers(2, 30), chunk=st.integers(1, 50), seed=st.integers(0, 99))
def test_chunked_equals_full_cross_entropy(tokens, vocab, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(vocab, 8, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    full = torch.nn.functional.cross_entropy(h @ w.t(), labels)
    dh, dw = torch.autograd.grad(full, (h, w))
    ours = chunked_cross_entropy(h, w, labels, chunk)
    ch, cw = torch.autograd.grad(ours, (h, w))
    assert torch.allclose(ours, full, rtol=1e-12, atol=1e-12)
    assert torch.allclose(ch, dh, rtol=1e-10, atol=1e-12) and torch.allclose(cw, dw, rtol=1e-10, atol=1e-12)


def test_gradcheck_with_a_partial_last_chunk():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 9, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 6, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (2, 9), generator=g)
    assert torch.autograd.gradcheck(lambda a, b: chunked_cross_entropy(a, b, labels, 4), (h, w))


class _Guard:
    def __init__(self, done: bool) -> None:
        self.done = done

    def query(self) -> bool:
        return self.done


def test_pool_reuses_a_released_buffer_only_after_its_guard_completes():
    pool = BufferPool(pin=False)
    a = pool.acquire((4, 3), torch.float16)
    guard = _Guard(False)
    pool.release(a, guard)
    b = pool.acquire((4, 3), torch.float16)
    assert b.data_ptr() != a.data_ptr()  # a's copy may still be reading it
    guard.done = True
    assert pool.acquire((4, 3), torch.float16).data_ptr() == a.data_ptr()
    assert pool.acquire((3, 4), torch.float16).data_ptr() not in (a.data_ptr(), b.data_ptr())
    assert pool.allocated_bytes == 3 * 12 * 2
