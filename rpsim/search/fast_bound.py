"""Lower bounds on what a list-timed estimate (rpsim.search.fast_list) can report for a candidate, from its
partition alone, in microseconds: the search uses them to skip the lowered plans of candidates that can
neither fit nor reach the plans the full simulator confirms (rpsim.search.prune).

Each bound follows from the rules the list timer and the memory pass apply, not from a fitted figure:
- iteration: every GPU-second of one iteration's compute shared evenly by the GPUs (compute actions take
  rpsim.sim.action_costs.duration_s, and a GPU runs one at a time; I + W cost what B costs); and, where
  the host optimizer steps every layer once per iteration on its one lane (weights streamed, RoundPipe),
  the sum of those steps. A steady state can beat neither; the estimate is clamped to them as the
  analytic RoundPipe estimate is (a window of a few iterations can catch a favourable phase);
- GPU memory: every layer of a job is loaded (streamed) or resident before its compute starts and freed
  after it ends (rpsim.sim.memory), so some GPU holds the largest stage's weights at once. With streamed
  weights a backward job's gradients live from its first weight-gradient action (B's end, W's start)
  until downloaded after its last compute, so during the last compute of a job of two or more
  microbatches the GPU holds the stage's weights, its gradients and that compute's working set (the
  backward walk without gradients made: rpsim.sim.memory._shape); a split backward's last W also runs
  beside what its microbatch's I keeps for it (held_for_w), whatever the job's length;
- host memory: with streamed weights the host holds the fp32 master, Adam state and the compute-dtype
  copies from time 0 (rpsim.sim.memory._model_states), and everything else it counts is added on top."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.costs.layer_costs import WEIGHT_BYTES_PER_PARAM
from rpsim.ir import Partition
from rpsim.schedules import traits_of
from rpsim.schedules.roundpipe import round_sizes
from rpsim.search.fast_context import FastContext
from rpsim.search.fast_roundpipe import slots_of, work_bound_s
from rpsim.sim.memory import ALLOCATOR_OVERHEAD


@dataclass(frozen=True)
class Bound:
    iteration_s: float  # no estimate's iteration is shorter
    gpu_bytes: float  # no estimate's peak GPU memory (allocator overhead included) is smaller
    host_bytes: float  # nor its peak host memory

    def infeasible(self, ctx: FastContext) -> bool:
        """The estimate cannot fit: rpsim.search.fast_eval.finish would give a reason."""
        return self.gpu_bytes > ctx.gpu_memory_bytes or self.host_bytes > ctx.host_memory_bytes


def lower_bound(ctx: FastContext, schedule: str, part: Partition, round_size: int | None = None,
                defer_w: bool = False) -> Bound:
    traits = traits_of(schedule)
    largest = max(ctx.weight(a, b) for a, b in (*part.fwd, *part.bwd))
    if not traits.stateless:
        # Stages on their home GPUs: forward, backward (I + W, with any recompute) of every microbatch.
        rc = ctx.recompute != "none"
        total = ctx.f(0, ctx.n_layers) + ctx.b(0, ctx.n_layers) + (ctx.r(0, ctx.n_layers) if rc else 0.0)
        return Bound(ctx.n_mb * total / ctx.n_gpus, largest * ALLOCATOR_OVERHEAD, 0.0)
    # Stateless GPUs: the round-robin dispatch's slots (the fused stage's forward is its recompute), and
    # a CPU step per layer per iteration summing one staged gradient per round.
    slots = slots_of(ctx, part)
    rounds = round_sizes(ctx.n_mb, ctx.n_gpus, round_size)
    cpu = ctx.cpu.step_s(ctx.params(0, ctx.n_layers), len(rounds), ctx.resident(0, ctx.n_layers))
    held = largest
    for s, (a, b) in zip(slots[len(part.fwd):], reversed(part.bwd), strict=True):  # backward slots, deep first
        if s.kind == "B" and defer_w:
            # The I keeps the stage's autograd graph and each segment output's gradient (recompute on).
            kept = ctx.act(a, b) + sum(ctx.boundary(x) for x in range(a + 1, b + 1))
            held = max(held, s.weight_bytes + s.grad_bytes + kept)
        elif min(rounds) >= 2:
            held = max(held, s.weight_bytes + s.grad_bytes + s.work_bytes)
    states = ctx.weight(0, ctx.n_layers) + ctx.params(0, ctx.n_layers) * WEIGHT_BYTES_PER_PARAM \
        + ctx.optim(0, ctx.n_layers)
    return Bound(max(work_bound_s(ctx, slots), cpu), held * ALLOCATOR_OVERHEAD, states)
