"""Time of one CPU optimizer STEP over a layer, as RoundPipe's host optimizer (and rpexec) runs it.

A layer's step first widens each gradient downloaded for it this iteration (one per backward job that
covered the layer: with RoundPipe, one per round) from fp16/bf16 into the fp32 gradient, then runs Adam
on the fp32 master and refreshes the fp16 copy the GPUs upload. Both parts are DRAM-bound:
- Adam + refresh: fused AdamW reads master, gradient, m, v (16 B) and writes master, m, v (12 B); the
  refresh reads 4 B and writes 2 B: 34 B per parameter.
- Accumulating one staged gradient: widen 2 B into 4 B of scratch, then read 4 + 4 B and write 4 B:
  18 B per parameter per staged gradient (the library's "G-copy", roundpipe.md, is the same work).
- The first staged gradient is only widened into the fp32 gradient (rpexec.step_loops: a copy, 2 B read
  and 4 B written, 6 B per parameter): on the one-H200 host it took 14.2 ms over 157M parameters where
  each later one took 29.5 ms (rpexec calibrate, session 13).
So step_s = P / adam_rate + P / widen_rate + (n_staged - 1) * P / accumulate_rate. `rpexec profile` and
`rpexec calibrate` time each part inside rpexec's own step; without a measurement the accumulate rate
follows the Adam rate by the byte ratio. Rates measured before the widening was timed on its own (a
profile or machine file without grad_widen_params_per_s) came from differences of whole steps, which
price the first gradient like the others; they keep that model (n_staged * P / accumulate_rate, 18 B each).
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

How much of the cache a tensor fills matters too. On the one-H200 host (300 MiB L3) a later pass cost
0.096-0.124 ns per parameter on tensors filling 48% of it and 0.137-0.148 ns at 80%
(benchmarks/step_allocations.py): the staged gradients and Adam's state stream through the same cache,
so a tensor filling more of it loses more of its lines between passes, and a lost line is read, widened
into and written back as in a streamed pass. rpsim prices that as a resident fraction h: of a tensor's
later passes, h run resident and 1 - h stream. `rpexec calibrate` times the resident pass over tensors
filling several shares of the cache (HostSpec.resident_rate_by_cache_share); a pass at rate r_s between
the streamed rate r_0 and the fully resident rate r_1 (the probe at half the cache) is the mix with
1/r_s = h/r_1 + (1 - h)/r_0, so h = (1/r_0 - 1/r_s) / (1/r_0 - 1/r_1), interpolated between the
measured shares. Without those points every tensor that fits is wholly resident (h = 1).

Thread count. A resident pass is bound by the cores, not the DRAM, and at 11 of the host's 16 threads
(rpexec's asynchronous STEP, rpsim.costs.optimizer_threads) every part of the STEP ran slower: the
summation 1.3-1.7x, Adam + refresh 1.2-1.5x (benchmarks/step_allocations.py, session 13). Where the
calibration timed the STEP at a smaller thread count (HostSpec.optimizer_rates_by_threads) each part's
rate at t threads is interpolated linearly in t between the measured counts and all cores, and falls in
proportion to t below the smallest measured count (each thread does its share of the work).

The model's own layer. `rpexec profile` times the STEP over one transformer layer of the model itself, at
all cores and at fewer threads (Profile.layer_steps): Adam + refresh, the widening, and one later pass,
each over that layer's real tensors. Where a profile has them, Adam and the widening run at the layer's
rates, and a layer of the measured kind keeps the share of its later passes resident that reproduces its
measured pass: with the streamed rate r_0 and the resident rate r_1 at the STEP's threads, a pass of P
parameters measured at z seconds has R = (P/r_0 - z) / (1/r_0 - 1/r_1) of them resident (clamped to
[0, P]); a host without a measured resident rate takes the layer's own pass rate as r_1 (R = P, even
where that is slower than the streamed probe: small layers pay per-tensor overheads), and
without a measured thread curve the streamed and resident rates follow the layer's own pass from all its
threads to fewer. Why: the synthetic tensors of `rpexec calibrate` (equal, at fixed shares of the cache)
put a llama-1.8b layer's isolated STEP at 122 ms where the layer took ~138 ms (one-H200 host, session 13):
real layers mix tensors of several sizes, which no one share of the cache stands for.

DMA through the cache. On Intel hosts inbound PCIe traffic passes through the last-level cache (Data
Direct I/O: DMA writes allocate into it, DMA reads look it up), the cache the resident passes work in. On
the one-H200 host a llama-1.8b layer's later passes took 1.65x as long beside H2D + D2H copies at 88 GB/s
(11 threads; 1.37x at 14), Adam + refresh 1.31x (benchmarks/step_under_load.py, session 14), while
sharing the DRAM max-min put the passes at 1.0x: their 2 B per parameter from DRAM hardly compete. Where
the machine file gives the cache's capacity (HostSpec.last_level_cache_bytes_per_s, `rpexec calibrate`:
the resident probe beside the copies, what the two moved together), the cache is a shared resource of
its own, per socket: every host<->GPU copy crosses it, and a resident pass crosses it instead of the
DRAM, carrying the 18 B per parameter it moves through the cache. Max-min then leaves the copies (which
ask less than a fair share) their rate and the passes what remains, as measured (the copies slowed by
under 8%).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rpsim.costs.optimizer_curves import interpolate, rate_at_threads, resident_fractions, thread_ratio

ADAM_AND_REFRESH_BYTES_PER_PARAM = 34.0
ACCUMULATE_BYTES_PER_PARAM = 18.0
WIDEN_BYTES_PER_PARAM = 6.0  # the first staged gradient: read 2 B, write the fp32 gradient's 4 B
ACCUMULATOR_BYTES_PER_PARAM = 8.0  # fp32 gradient + fp32 scratch: one tensor's working set across its passes
RESIDENT_PASS_BYTES_PER_PARAM = 2.0  # a later pass over a cache-resident tensor: the staged bf16/fp16 read


def cache_resident_params(tensor_params: Iterable[float], last_level_cache_bytes: float,
                          resident_fraction_by_share: tuple[tuple[float, float], ...] = ()) -> float:
    """Parameters whose later accumulation passes stay in the cache: of each tensor whose working set (fp32
    gradient + scratch) fits, the fraction h of its share of the cache (all of it without measured
    points); none where the cache size is unknown (0)."""
    total = 0.0
    for p in tensor_params:
        share = ACCUMULATOR_BYTES_PER_PARAM * p / last_level_cache_bytes if last_level_cache_bytes > 0 else 0.0
        if 0 < share <= 1:
            total += p * (interpolate(resident_fraction_by_share, share) if resident_fraction_by_share else 1.0)
    return total


def accumulation_dram_bytes(params: float, n_staged: int, resident_params: float = 0.0,
                            widened: bool = False) -> tuple[float, float, float]:
    """DRAM bytes of summing n_staged gradients over a layer of `params` parameters, `resident_params` of
    them in tensors that fit the cache: (streamed passes, the first gradient's widening, resident later
    passes). `widened`: the first gradient is a widening copy of its own (6 B); else it is priced as a
    streamed pass (18 B), the model of rates taken from whole-step differences."""
    n = max(n_staged, 1)
    if widened:
        return ((n - 1) * (params - resident_params) * ACCUMULATE_BYTES_PER_PARAM, params * WIDEN_BYTES_PER_PARAM,
                (n - 1) * resident_params * RESIDENT_PASS_BYTES_PER_PARAM)
    streamed = (n * (params - resident_params) + resident_params) * ACCUMULATE_BYTES_PER_PARAM
    return streamed, 0.0, (n - 1) * resident_params * RESIDENT_PASS_BYTES_PER_PARAM


@dataclass(frozen=True)
class CpuOptimizerRates:
    adam_params_per_s: float  # Adam on the fp32 master and the fp16-copy refresh
    grad_accumulate_params_per_s: float  # widening one staged gradient into the fp32 gradient, streamed
    # a later pass over a tensor whose gradient and scratch stay in the last-level cache
    resident_accumulate_params_per_s: float | None = None  # None: as fast as a streamed pass
    last_level_cache_bytes: float = 0.0  # 0: unknown, every tensor streams
    # (share of the cache a tensor's working set fills, fraction of its later passes that stay resident)
    resident_fraction_by_share: tuple[tuple[float, float], ...] = ()
    widen_params_per_s: float | None = None  # the first staged gradient's copy; None: priced as a later pass
    # (layer parameters, its later pass's measured rate at these threads): the model's own layers (Profile.layer_steps)
    measured_later_pass: tuple[tuple[float, float], ...] = ()
    # the bytes a resident pass's flow carries per parameter: its DRAM read (2 B), or, where the host's
    # last-level cache is a shared resource of its own (HostSpec.last_level_cache_bytes_per_s), the 18 B
    # the pass moves through that cache (module docstring, "DMA through the cache")
    resident_pass_bytes_per_param: float = RESIDENT_PASS_BYTES_PER_PARAM

    @property
    def resident_rate(self) -> float:
        return self.resident_accumulate_params_per_s or self.grad_accumulate_params_per_s

    def resident_params(self, tensor_params: Iterable[float]) -> float:
        return cache_resident_params(tensor_params, self.last_level_cache_bytes, self.resident_fraction_by_share)

    def layer_resident_params(self, params: float, tensor_params: Iterable[float]) -> float:
        """resident_params of one layer of `params` parameters, or, for a layer of a kind the profile timed,
        the parameters whose resident passes reproduce its measured later pass (module docstring)."""
        for measured_params, rate in self.measured_later_pass:
            if abs(measured_params - params) < 0.5:  # the same layer kind: parameter counts are exact
                r0, r1 = self.grad_accumulate_params_per_s, self.resident_rate
                if r1 == r0:  # any split takes the same time
                    return 0.0
                # (r_1 below r_0 only where r_1 is this layer's own pass: then R = P)
                return params * min(1.0, max(0.0, (1 / r0 - 1 / rate) / (1 / r0 - 1 / r1)))
        return self.resident_params(tensor_params)

    def step_s(self, params: float, n_staged: int, resident_params: float = 0.0) -> float:
        """One STEP alone: `resident_params` of the layer's `params` are in tensors that fit the cache."""
        resident_passes = (max(n_staged, 1) - 1) * resident_params
        streamed_passes = max(n_staged, 1) * params - resident_passes
        first = 0.0
        if self.widen_params_per_s:
            streamed_passes -= params  # every tensor's first gradient is the widening, resident or not
            first = params / self.widen_params_per_s
        return (params / self.adam_params_per_s + first + streamed_passes / self.grad_accumulate_params_per_s
                + resident_passes / self.resident_rate)

    def phase_bytes(self, params: float, n_staged: int, resident_params: float = 0.0
                    ) -> tuple[float, float, float, float]:
        """DRAM bytes of the streamed accumulation passes, the first gradient's widening, the cache-resident
        passes, then Adam + refresh (per tensor the passes interleave; their sum is what the DRAM sees)."""
        streamed, widen, resident = accumulation_dram_bytes(params, n_staged, resident_params,
                                                            self.widen_params_per_s is not None)
        resident *= self.resident_pass_bytes_per_param / RESIDENT_PASS_BYTES_PER_PARAM
        return streamed, widen, resident, params * ADAM_AND_REFRESH_BYTES_PER_PARAM

    @property
    def accumulate_bytes_per_s(self) -> float:
        return self.grad_accumulate_params_per_s * ACCUMULATE_BYTES_PER_PARAM

    @property
    def widen_bytes_per_s(self) -> float:
        return (self.widen_params_per_s or self.grad_accumulate_params_per_s) * WIDEN_BYTES_PER_PARAM

    @property
    def resident_accumulate_bytes_per_s(self) -> float:
        """The DRAM bytes a resident pass takes per second at its rate (the cores, not the DRAM, bound it)."""
        return self.resident_rate * self.resident_pass_bytes_per_param

    @property
    def adam_bytes_per_s(self) -> float:
        return self.adam_params_per_s * ADAM_AND_REFRESH_BYTES_PER_PARAM


@dataclass(frozen=True)
class LayerStepRates:
    """One layer kind's measured STEP (Profile.layer_steps) at the STEP's thread count, params/s."""
    params: float
    adam_params_per_s: float
    widen_params_per_s: float
    later_pass_params_per_s: float
    later_pass_thread_fraction: float  # of the later pass's rate at the most threads measured


def layer_step_rates(profile, threads: int | None) -> tuple[LayerStepRates, ...]:
    """Per layer kind of profile.layer_steps, its rates at `threads` (None: the most threads measured),
    interpolated between the measured counts (rate_at_threads)."""
    out = []
    for params in dict.fromkeys(s.params for s in profile.layer_steps):
        points = sorted((s for s in profile.layer_steps if s.params == params), key=lambda s: s.threads)
        t = threads or points[-1].threads
        adam, widen, later = (rate_at_threads(tuple((s.threads, params / getattr(s, part)) for s in points), t)
                              for part in ("adam_refresh_s", "widen_s", "later_pass_s"))
        out.append(LayerStepRates(params, adam, widen, later, later * points[-1].later_pass_s / params))
    return tuple(out)


def cpu_optimizer_rates(host, profile=None, dram_bytes_per_s: float | None = None,
                        threads: int | None = None) -> CpuOptimizerRates:
    """A profile's measured rates where it has them, else the host's (a HostSpec: its measured
    accumulation rate, or its Adam rate scaled by the byte ratio); each capped by the host's DRAM
    bandwidth over its bytes per parameter when `dram_bytes_per_s` is given. The cache-resident pass
    rate and the cache size are the host's (a profile measures a streamed layer only); a resident pass
    is never slower than a streamed one (the cache only removes DRAM traffic). `threads`: the STEP's
    thread count (rpsim.costs.optimizer_threads; None: all cores), which scales each rate by the host's
    measured rates at fewer threads (thread_ratio) where it has them. A profile's layer_steps (the STEP
    over the model's own layers) set Adam's and the widening's rates and each measured layer's residency
    (module docstring, CpuOptimizerRates.layer_resident_params)."""
    adam = profile.adam_params_per_s if profile is not None and profile.adam_params_per_s else host.adam_params_per_s
    from_profile = profile is not None and bool(profile.grad_accumulate_params_per_s)
    from_host = not from_profile and bool(host.grad_accumulate_params_per_s) and adam == host.adam_params_per_s
    if from_profile:
        accumulate = profile.grad_accumulate_params_per_s
    elif from_host:
        accumulate = host.grad_accumulate_params_per_s
    else:
        accumulate = adam * ADAM_AND_REFRESH_BYTES_PER_PARAM / ACCUMULATE_BYTES_PER_PARAM
    # the widening is timed with the rates it came with (a profile's, or the host's)
    widen = profile.grad_widen_params_per_s if from_profile else host.grad_widen_params_per_s if from_host else None
    resident = host.grad_accumulate_resident_params_per_s
    fractions = resident_fractions(host.resident_rate_by_cache_share, host.grad_accumulate_params_per_s or accumulate,
                                   resident) if resident else ()
    if threads is not None and host.optimizer_rates_by_threads:
        def at_threads(rate: float | None, field: str, all_cores: float | None) -> float | None:
            """`rate` scaled as the host's `field` fell from all cores to fewer threads, where measured."""
            if not rate or not all_cores:
                return rate
            points = tuple((m.threads, getattr(m, field) / all_cores) for m in host.optimizer_rates_by_threads
                           if getattr(m, field))
            return rate * thread_ratio(points, threads, host.cores)
        adam = at_threads(adam, "adam_params_per_s", host.adam_params_per_s)
        accumulate = at_threads(accumulate, "grad_accumulate_params_per_s", host.grad_accumulate_params_per_s)
        widen = at_threads(widen, "grad_widen_params_per_s", host.grad_widen_params_per_s)
        resident = at_threads(resident, "grad_accumulate_resident_params_per_s", resident)
    layers = layer_step_rates(profile, threads) if profile is not None and profile.layer_steps else ()
    if layers:  # the model's own layers (module docstring)
        largest = max(layers, key=lambda x: x.params)  # its Adam state streams as any layer's does
        adam, widen = largest.adam_params_per_s, largest.widen_params_per_s
        if not host.optimizer_rates_by_threads:  # no host curve: the layer's own, from its threads to fewer
            accumulate *= largest.later_pass_thread_fraction
            resident = resident * largest.later_pass_thread_fraction if resident else None
        fastest = max(x.later_pass_params_per_s for x in layers)
        resident = max(resident, fastest) if resident else fastest
    if dram_bytes_per_s:
        adam = min(adam, dram_bytes_per_s / ADAM_AND_REFRESH_BYTES_PER_PARAM)
        accumulate = min(accumulate, dram_bytes_per_s / ACCUMULATE_BYTES_PER_PARAM)
        resident = min(resident, dram_bytes_per_s / RESIDENT_PASS_BYTES_PER_PARAM) if resident else None
        widen = min(widen, dram_bytes_per_s / WIDEN_BYTES_PER_PARAM) if widen else None
    # a resident pass is never slower than a streamed one over the same tensor; a resident rate that is
    # only the profiled layer's own pass is that layer's measurement, kept as it is
    if resident and not (layers and not host.grad_accumulate_resident_params_per_s):
        resident = max(resident, accumulate)
    return CpuOptimizerRates(adam, accumulate, resident, host.last_level_cache_bytes, fractions, widen,
                             tuple((x.params, x.later_pass_params_per_s) for x in layers),
                             ACCUMULATE_BYTES_PER_PARAM if host.last_level_cache_bytes_per_s
                             else RESIDENT_PASS_BYTES_PER_PARAM)
