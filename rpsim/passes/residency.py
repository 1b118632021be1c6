"""Do a fixed-placement plan's model states and activations fit on its GPUs (weights, gradients and
Adam state on the GPU, as Megatron runs them)? If not, its weights are streamed from host memory
(the "PP + offload" baseline RoundPipe compares against). The simulator still tracks memory exactly;
this estimate only picks the policy."""
from __future__ import annotations

from collections import defaultdict

from rpsim.costs import ModelCosts
from rpsim.ir import Plan
from rpsim.ir.action import INPUT_GRAD_KINDS
from rpsim.ir.dataflow import saved_boundaries
from rpsim.sim.memory import ALLOCATOR_OVERHEAD
from rpsim.specs import ServerSpec


def peak_in_flight(plan: Plan, gpu: int) -> dict[tuple[int, int], int]:
    """Largest number of microbatches with F done and B not yet done, per (stage, iteration)."""
    live: dict[tuple[int, int], int] = defaultdict(int)
    peak: dict[tuple[int, int], int] = defaultdict(int)
    for a in plan.lane(gpu, "compute"):
        key = (a.stage, a.it)  # type: ignore[assignment]
        if a.kind == "F":
            live[key] += 1
            peak[key] = max(peak[key], live[key])
        elif a.kind in INPUT_GRAD_KINDS:
            live[key] -= 1
    return peak


def peak_pending_w(plan: Plan, gpu: int) -> dict[int, int]:
    """Largest number of microbatches with I done and W not yet done, per stage."""
    live: dict[tuple[int, int], int] = defaultdict(int)
    peak: dict[int, int] = defaultdict(int)
    for a in plan.lane(gpu, "compute"):
        if a.kind in ("I", "W"):
            live[(a.stage, a.it)] += 1 if a.kind == "I" else -1  # type: ignore[index]
            peak[a.stage] = max(peak[a.stage], live[(a.stage, a.it)])  # type: ignore[index]
    return peak


def held_for_w_bytes(plan: Plan, costs: ModelCosts, stage: int) -> float:
    """rpsim.sim.memory.held_for_w for a stage, from layer costs: its activations and output gradients."""
    a, b = plan.partition.fwd[stage]
    n = len(costs.layers)
    ends = [b] if plan.recompute == "none" else range(a + 1, b + 1)
    grads = sum(costs.layers[x].input_bytes for x in ends if 0 < x < n)
    return sum(c.activation_bytes for c in costs.layers[a:b]) + grads


def stage_bytes(plan: Plan, costs: ModelCosts, stage: int) -> tuple[float, float, float]:
    """(model states, saved activations per microbatch, full activations of one microbatch)."""
    a, b = plan.partition.fwd[stage]
    layers = costs.layers[a:b]
    states = sum(c.weight_bytes + c.grad_bytes + c.optim_bytes for c in layers)
    full = sum(c.activation_bytes for c in layers)
    inside = saved_boundaries(plan.partition, plan.recompute, False, a, b)
    saved = full if plan.recompute == "none" else (
        layers[0].input_bytes + sum(costs.layers[x].input_bytes for x in inside))
    return states, saved, full


def resident_fits(plan: Plan, costs: ModelCosts, server: ServerSpec) -> bool:
    for gpu in range(plan.n_gpus):
        stages = sorted({a.stage for a in plan.lane(gpu, "compute") if a.is_compute})  # type: ignore[type-var]
        peaks = peak_in_flight(plan, gpu)
        pending_w = peak_pending_w(plan, gpu)
        need = 0.0
        transient = 0.0
        for s in stages:
            states, saved, full = stage_bytes(plan, costs, s)  # type: ignore[arg-type]
            need += states + saved * max((n for (st, _), n in peaks.items() if st == s), default=0)
            if pending_w.get(s):  # type: ignore[arg-type]
                need += pending_w[s] * held_for_w_bytes(plan, costs, s)  # type: ignore[index,arg-type]
            transient = max(transient, full)
        if (need + transient) * ALLOCATOR_OVERHEAD > server.gpu.memory_bytes:
            return False
    return True
