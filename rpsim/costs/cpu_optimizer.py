"""Time of one CPU optimizer STEP over a layer, as RoundPipe's host optimizer (and rpexec) runs it.

A layer's step first widens each gradient downloaded for it this iteration (one per backward job that
covered the layer: with RoundPipe, one per round) from fp16/bf16 into the fp32 gradient, then runs Adam
on the fp32 master and refreshes the fp16 copy the GPUs upload. Both parts are DRAM-bound:
- Adam + refresh: fused AdamW reads master, gradient, m, v (16 B) and writes master, m, v (12 B); the
  refresh reads 4 B and writes 2 B: 34 B per parameter.
- Accumulating one staged gradient: widen 2 B into 4 B of scratch, then read 4 + 4 B and write 4 B:
  18 B per parameter per staged gradient (the library's "G-copy", roundpipe.md, is the same work).
So step_s = P / adam_rate + n_staged * P / accumulate_rate. `rpexec profile` measures both rates with
rpexec's own code; without a measurement the accumulate rate follows the Adam rate by the byte ratio.
The first model, Adam alone, under-predicted every measured RoundPipe-sync run by ~50% (e03).

Both parts stream the layer's state through host DRAM, so neither can run faster than the DRAM
bandwidth over its bytes per parameter: a measured rate above that (a profile whose state fit the
cache) is capped there. At the `pcie` level the simulator runs each part as a flow of these bytes over
the sockets' DRAM, shared max-min with the DMA copies (rpsim.sim.topology), so a step slows down while
weight uploads and gradient downloads use the same DRAM: an 8B RoundPipe run on 2x H200 spent 6.4 s
per iteration in a step the isolated profile put at 3.6 s.

Cache residency. The step runs its accumulation tensor by tensor (rpexec.step_loops): every staged
gradient of one parameter tensor is summed before the next tensor starts. Its working set across those
passes is the tensor's fp32 gradient and fp32 scratch, 8 B per parameter. Where that fits the host's
last-level cache, the second and later passes find both there and read only the staged 2 B gradient
from DRAM; where it does not, each pass streams all 18 B (a sequential loop over more data than an LRU
cache holds misses on every line: Hennessy & Patterson, Computer Architecture, 6th ed., Sec. B.3). So
for n staged gradients a tensor of p parameters moves 18·n·p bytes streamed, and 18·p + 2·(n-1)·p
resident (its first pass as a streamed one: that is where its gradient and scratch enter the cache,
and the calibrated rates price it). A resident pass is not free: the cores still move 18 B per
parameter through the cache. It runs at the host's measured cache-resident accumulation rate
(HostSpec.grad_accumulate_resident_params_per_s, a tensor that fits the cache), or, where none was
measured, no faster than a streamed pass. At the `pcie` level its 2 B per parameter are what it takes
from the DRAM that the copies share, so a resident layer's step both runs faster and slows the copies
less. Adam + refresh stream 34 B either way (master, m and v of a tensor are 12 B per parameter more
than its accumulation's working set, and a layer's Adam state is many times the cache).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ADAM_AND_REFRESH_BYTES_PER_PARAM = 34.0
ACCUMULATE_BYTES_PER_PARAM = 18.0
ACCUMULATOR_BYTES_PER_PARAM = 8.0  # fp32 gradient + fp32 scratch: one tensor's working set across its passes
RESIDENT_PASS_BYTES_PER_PARAM = 2.0  # a later pass over a cache-resident tensor: the staged bf16/fp16 read


def cache_resident_params(tensor_params: Iterable[float], last_level_cache_bytes: float) -> float:
    """Parameters of the tensors whose accumulation working set (fp32 gradient + scratch) fits the cache;
    none where the cache size is unknown (0)."""
    return sum(p for p in tensor_params if 0 < ACCUMULATOR_BYTES_PER_PARAM * p <= last_level_cache_bytes)


def accumulation_dram_bytes(params: float, n_staged: int, resident_params: float = 0.0) -> tuple[float, float]:
    """DRAM bytes of summing n_staged gradients over a layer of `params` parameters, `resident_params` of
    them in tensors that fit the cache: (streamed passes, resident later passes)."""
    n = max(n_staged, 1)
    streamed = (n * (params - resident_params) + resident_params) * ACCUMULATE_BYTES_PER_PARAM
    return streamed, (n - 1) * resident_params * RESIDENT_PASS_BYTES_PER_PARAM


@dataclass(frozen=True)
class CpuOptimizerRates:
    adam_params_per_s: float  # Adam on the fp32 master and the fp16-copy refresh
    grad_accumulate_params_per_s: float  # widening one staged gradient into the fp32 gradient, streamed
    # a later pass over a tensor whose gradient and scratch stay in the last-level cache
    resident_accumulate_params_per_s: float | None = None  # None: as fast as a streamed pass
    last_level_cache_bytes: float = 0.0  # 0: unknown, every tensor streams

    @property
    def resident_rate(self) -> float:
        return self.resident_accumulate_params_per_s or self.grad_accumulate_params_per_s

    def resident_params(self, tensor_params: Iterable[float]) -> float:
        return cache_resident_params(tensor_params, self.last_level_cache_bytes)

    def step_s(self, params: float, n_staged: int, resident_params: float = 0.0) -> float:
        """One STEP alone: `resident_params` of the layer's `params` are in tensors that fit the cache."""
        resident_passes = (max(n_staged, 1) - 1) * resident_params
        streamed_passes = max(n_staged, 1) * params - resident_passes
        return (params / self.adam_params_per_s + streamed_passes / self.grad_accumulate_params_per_s
                + resident_passes / self.resident_rate)

    def phase_bytes(self, params: float, n_staged: int, resident_params: float = 0.0) -> tuple[float, float, float]:
        """DRAM bytes of the streamed accumulation passes, the cache-resident ones, then Adam + refresh: the
        order the step runs them in (per tensor the passes interleave; their sum is what the DRAM sees)."""
        streamed, resident = accumulation_dram_bytes(params, n_staged, resident_params)
        return streamed, resident, params * ADAM_AND_REFRESH_BYTES_PER_PARAM

    @property
    def accumulate_bytes_per_s(self) -> float:
        return self.grad_accumulate_params_per_s * ACCUMULATE_BYTES_PER_PARAM

    @property
    def resident_accumulate_bytes_per_s(self) -> float:
        """The DRAM bytes a resident pass takes per second at its rate (the cores, not the DRAM, bound it)."""
        return self.resident_rate * RESIDENT_PASS_BYTES_PER_PARAM

    @property
    def adam_bytes_per_s(self) -> float:
        return self.adam_params_per_s * ADAM_AND_REFRESH_BYTES_PER_PARAM


def cpu_optimizer_rates(host, profile=None, dram_bytes_per_s: float | None = None) -> CpuOptimizerRates:
    """A profile's measured rates where it has them, else the host's (a HostSpec: its measured
    accumulation rate, or its Adam rate scaled by the byte ratio); each capped by the host's DRAM
    bandwidth over its bytes per parameter when `dram_bytes_per_s` is given. The cache-resident pass
    rate and the cache size are the host's (a profile measures a streamed layer only); a resident pass
    is never slower than a streamed one (the cache only removes DRAM traffic)."""
    adam = profile.adam_params_per_s if profile is not None and profile.adam_params_per_s else host.adam_params_per_s
    if profile is not None and profile.grad_accumulate_params_per_s:
        accumulate = profile.grad_accumulate_params_per_s
    elif host.grad_accumulate_params_per_s and adam == host.adam_params_per_s:
        accumulate = host.grad_accumulate_params_per_s
    else:
        accumulate = adam * ADAM_AND_REFRESH_BYTES_PER_PARAM / ACCUMULATE_BYTES_PER_PARAM
    resident = host.grad_accumulate_resident_params_per_s
    if dram_bytes_per_s:
        adam = min(adam, dram_bytes_per_s / ADAM_AND_REFRESH_BYTES_PER_PARAM)
        accumulate = min(accumulate, dram_bytes_per_s / ACCUMULATE_BYTES_PER_PARAM)
        resident = min(resident, dram_bytes_per_s / RESIDENT_PASS_BYTES_PER_PARAM) if resident else None
    resident = max(resident, accumulate) if resident else None
    return CpuOptimizerRates(adam, accumulate, resident, host.last_level_cache_bytes)
