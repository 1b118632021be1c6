"""What a RoundPipe backward job with deferred W (BuildOptions.defer_w) changes for the fast estimate
(rpsim.search.fast_roundpipe), read off the builder and the simulator's rules:
- order (rpsim.schedules.roundpipe.deferred_w_order): I of each microbatch, and the W of microbatch k after
  the I of k + W_LAG, the last W_LAG W passes after the last I; the input gradient for the stage below
  leaves after I alone (rpsim.ir.dataflow), so the next slot's first microbatch can start one W earlier
  and the job ends W_LAG + 1 W passes (fewer in a short round) after its last output;
- time (rpsim.sim.action_costs.duration_s): I is half the backward plus any recompute, W the other half;
- memory (rpsim.sim.memory): each I keeps the stage's activations and its segment outputs' gradients
  (held_for_w) from its end to its W's end, so a W runs beside W_LAG + 1 of them and an I beside W_LAG;
  an I works at the backward's grain (the whole stage unless recompute is per layer), a W one layer at a
  time; the job's gradients exist from its first W's start.
Pure; imports no simulator."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.schedules.roundpipe import W_LAG
from rpsim.search.fast_context import FastContext


@dataclass(frozen=True)
class DeferredW:
    w_s: float  # seconds of one microbatch's W (the rest of the slot's time per microbatch is its I)
    held_bytes: float  # what one I keeps for its W
    i_work_bytes: float  # an I's working set
    w_work_bytes: float  # a W's working set

    def tail_s(self, size: int) -> float:
        """Seconds a job of `size` microbatches runs after its last I: the W passes that trail it."""
        return min(size, W_LAG + 1) * self.w_s

    def phases(self, size: int, i_s: float, grad_bytes: float) -> tuple[tuple[float, float], ...]:
        """(seconds into the job, the most it holds from then on beyond its weights and buffers) of a job of
        `size` microbatches whose I passes take `i_s` each: from its start, an I beside the W_LAG inputs kept
        for W passes still to come (with the job's gradients, which exist once its first W has started);
        from its first W, after W_LAG + 1 I passes, a W beside W_LAG + 1 (or all `size`) kept inputs and
        the gradients. The second phase starts later, when downloads still pending at the start are done."""
        first_w = min(size, W_LAG + 1)
        during_i = min(size - 1, W_LAG) * self.held_bytes + self.i_work_bytes
        if size > first_w:
            during_i += grad_bytes
        during_w = first_w * self.held_bytes + self.w_work_bytes + grad_bytes
        return (0.0, during_i), (first_w * i_s, during_w)


def deferred_w_of(ctx: FastContext, a: int, b: int) -> DeferredW:
    """The split of the (non-fused) backward stage over pipeline layers a..b-1. held_for_w: the stage's
    activations and the gradient reaching each segment's output, every layer's under recomputation (the
    boundaries a+1..b, 0 at the model's end), the stage output's alone without."""
    ends = range(b, b + 1) if ctx.recompute == "none" else range(a + 1, b + 1)
    held = ctx.act(a, b) + sum(ctx.boundary(x) for x in ends)
    return DeferredW(ctx.b(a, b) / 2, held, ctx.backward_work(a, b, ctx.recompute == "layer"),
                     ctx.backward_work(a, b, True))
