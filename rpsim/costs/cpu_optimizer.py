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
"""
from __future__ import annotations

from dataclasses import dataclass

ADAM_AND_REFRESH_BYTES_PER_PARAM = 34.0
ACCUMULATE_BYTES_PER_PARAM = 18.0


@dataclass(frozen=True)
class CpuOptimizerRates:
    adam_params_per_s: float  # Adam on the fp32 master and the fp16-copy refresh
    grad_accumulate_params_per_s: float  # widening one staged gradient into the fp32 gradient

    def step_s(self, params: float, n_staged: int) -> float:
        return params / self.adam_params_per_s + max(n_staged, 1) * params / self.grad_accumulate_params_per_s

    def phase_bytes(self, params: float, n_staged: int) -> tuple[float, float]:
        """DRAM bytes of the accumulation, then of Adam + refresh, in the order the step runs them."""
        return max(n_staged, 1) * params * ACCUMULATE_BYTES_PER_PARAM, params * ADAM_AND_REFRESH_BYTES_PER_PARAM

    @property
    def accumulate_bytes_per_s(self) -> float:
        return self.grad_accumulate_params_per_s * ACCUMULATE_BYTES_PER_PARAM

    @property
    def adam_bytes_per_s(self) -> float:
        return self.adam_params_per_s * ADAM_AND_REFRESH_BYTES_PER_PARAM


def cpu_optimizer_rates(host, profile=None, dram_bytes_per_s: float | None = None) -> CpuOptimizerRates:
    """A profile's measured rates where it has them, else the host's (a HostSpec: its measured
    accumulation rate, or its Adam rate scaled by the byte ratio); each capped by the host's DRAM
    bandwidth over its bytes per parameter when `dram_bytes_per_s` is given."""
    adam = profile.adam_params_per_s if profile is not None and profile.adam_params_per_s else host.adam_params_per_s
    if profile is not None and profile.grad_accumulate_params_per_s:
        accumulate = profile.grad_accumulate_params_per_s
    elif host.grad_accumulate_params_per_s and adam == host.adam_params_per_s:
        accumulate = host.grad_accumulate_params_per_s
    else:
        accumulate = adam * ADAM_AND_REFRESH_BYTES_PER_PARAM / ACCUMULATE_BYTES_PER_PARAM
    if dram_bytes_per_s:
        adam = min(adam, dram_bytes_per_s / ADAM_AND_REFRESH_BYTES_PER_PARAM)
        accumulate = min(accumulate, dram_bytes_per_s / ACCUMULATE_BYTES_PER_PARAM)
    return CpuOptimizerRates(adam, accumulate)
