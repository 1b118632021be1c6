"""Host side of the model states: fp32 master weights with a torch AdamW per pipeline layer, two
compute-dtype copies per layer (pinned on CUDA) that LOADs read, and gradient staging for OFFLOADs.

Versions: iteration i's LOADs read copy i % 2; STEP(layer, it) writes copy (it + lag) % 2, where lag is
1 (sync) or 2 (async, staleness 1). With async, iteration i+1 reads copy (i+1) % 2 while STEP(i) writes
copy i % 2, so the optimizer never overwrites weights an in-flight iteration still uploads (the
consistency protocol's P-copy ordering, roundpipe.md).

Nothing on the optimizer's path allocates after warm-up (rpexec.warmup): STEP sums the staged gradients
in place into an fp32 gradient buffer, staged gradient buffers come from a BufferPool and go back to it
after the sum, and the fp32 -> compute-dtype refresh converts inside copy_. The first version allocated
fp32 temporaries per staged gradient and ran 20-70x slower than the AdamW it wrapped.

The fp32 gradient buffers are shared by parameter name across layers (every decoder layer's
`attn.q_proj.weight` uses one buffer): STEPs run one at a time on the optimizer lane and each STEP
rewrites the whole buffer before its AdamW reads it, so one buffer per name is exact and saves 4 bytes
per parameter of host memory (16 instead of 20: fp32 master + Adam m, v + two compute-dtype copies),
which is what lets a 13B model's host state fit a 256 GiB host."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import torch
from torch import nn

from rpexec.bufferpool import BufferPool
from rpexec.host_arena import HostArena
from rpexec.step_loops import accumulate_staged, copy_all


def make_adamw(params: list, lr: float) -> torch.optim.Optimizer:
    """torch's fused AdamW, on the CPU (multi-threaded, ~6x the foreach path on 2 cores) or a GPU."""
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=lr, foreach=True)


class HostParams:
    def __init__(self, layers: list[nn.Module], dtype: torch.dtype, pin: bool, lag: int, lr: float = 1e-4) -> None:
        self.layers = layers
        self.dtype = dtype
        self.lag = lag
        self.pin = pin
        self.weight_arena = HostArena(pin)
        self.lock = threading.Lock()
        self.copies: list[list[dict[str, torch.Tensor]]] = []
        self.version: list[list[int]] = []  # optimizer steps applied to each copy
        for layer in layers:
            one = {n: self._host(p.detach()) for n, p in layer.named_parameters()}
            self.copies.append([one, {n: self._host(t) for n, t in one.items()}])
            self.version.append([0, 0])
        self.optim = [make_adamw(list(layer.parameters()), lr) if list(layer.parameters()) else None
                      for layer in layers]
        self.grad_pool = BufferPool(pin)
        self.scratch: dict[torch.Size, torch.Tensor] = {}
        self.fp32_grads: dict[tuple[str, torch.Size], torch.Tensor] = {}  # shared by name, see above
        self.staged: dict[tuple[int, int], list[dict[str, torch.Tensor]]] = defaultdict(list)
        self.captured: dict[int, dict[str, torch.Tensor]] = {}  # layer -> fp32 grads of iteration 0
        self.load_log: list[tuple[int, int, int]] = []  # (layer, iteration, version read)
        # (layer, iteration, staged gradients, perf_counter at the start, seconds summing the staged
        # gradients, in AdamW, refreshing the copy): a STEP's parts as the run meets them, which the
        # trace's one STEP span cannot separate (issue 14: across runs of one plan it is the sum of the
        # staged gradients that moves, over time rather than with the allocation; benchmarks/notes-rpexec.md).
        self.step_parts: list[tuple[int, int, int, float, float, float, float]] = []

    def _host(self, t: torch.Tensor) -> torch.Tensor:
        """A compute-dtype copy of `t` in the weights' arena (pinned on CUDA: rpexec.host_arena)."""
        return self.weight_arena.empty(t.shape, self.dtype).copy_(t)

    def weights_for(self, layer: int, it: int) -> dict[str, torch.Tensor]:
        with self.lock:
            self.load_log.append((layer, it, self.version[layer][it % 2]))
        return self.copies[layer][it % 2]

    def grad_buffer(self, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """A (pinned, on CUDA) host buffer for one downloaded gradient; STEP returns it to the pool."""
        return self.grad_pool.acquire(shape, dtype)

    def _scratch(self, shape: torch.Size) -> torch.Tensor:
        """An fp32 buffer per parameter shape, reused by every STEP (STEPs run on one optimizer lane)."""
        if shape not in self.scratch:
            self.scratch[shape] = torch.empty(shape, dtype=torch.float32)
        return self.scratch[shape]

    def fp32_grad(self, name: str, p: torch.Tensor) -> torch.Tensor:
        """The fp32 gradient buffer of every layer's parameter `name` (allocated on first use or warm-up)."""
        key = (name, p.shape)
        if key not in self.fp32_grads:
            self.fp32_grads[key] = torch.zeros(p.shape, dtype=torch.float32)
        return self.fp32_grads[key]

    def stage_grads(self, layer: int, it: int, grads: dict[str, torch.Tensor]) -> None:
        with self.lock:
            self.staged[(layer, it)].append(grads)

    def step(self, layer: int, it: int, capture: bool) -> None:
        """Sum the layer's staged gradients in fp32, run AdamW, refresh the copy iteration it+lag reads."""
        with self.lock:
            staged = self.staged.pop((layer, it), [])
        t0 = time.perf_counter()
        params = dict(self.layers[layer].named_parameters())
        names = list(params)
        grads = [self.fp32_grad(name, p) for name, p in params.items()]
        for p, grad in zip(params.values(), grads):
            p.grad = grad
        with torch.no_grad():  # one GIL-free call for the whole loop (rpexec.step_loops says why)
            accumulate_staged(grads, [[g[name] for name in names] for g in staged],
                              [self._scratch(p.shape) for p in params.values()])
        for g in staged:
            for t in g.values():
                self.grad_pool.release(t)
        if capture and it == 0:
            self.captured[layer] = {n: p.grad.clone() for n, p in params.items()}  # type: ignore[union-attr]
        t1 = time.perf_counter()
        opt = self.optim[layer]
        if opt is not None:
            opt.step()
        t2 = time.perf_counter()
        target = (it + self.lag) % 2
        with torch.no_grad():
            copy_all([self.copies[layer][target][name] for name in names], list(params.values()))
        t3 = time.perf_counter()
        with self.lock:
            self.version[layer][target] = it + 1
            self.step_parts.append((layer, it, len(staged), t0, t1 - t0, t2 - t1, t3 - t2))
