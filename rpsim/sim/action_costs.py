"""Duration of compute and optimizer actions, and bytes of transfers: pure functions of the plan, the
per-layer costs and the server. The executor moves exactly these buffers (rpexec mirrors the rules)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rpsim.costs import ModelCosts
from rpsim.costs.cpu_optimizer import CpuOptimizerRates
from rpsim.costs.roofline import elementwise_bytes_per_s
from rpsim.errors import PlanError
from rpsim.ir import Action, Plan
from rpsim.ir.action import COMPUTE_KINDS
from rpsim.ir.dataflow import saved_boundaries
from rpsim.ir.jobs import stages_are_resident
from rpsim.sim.host_issue import host_issue_s, is_compute
from rpsim.specs.gpu import GPUSpec

# A resident stage's optimizer step on its GPU, as rpexec runs it (rpexec/transfers.py `step`), is three
# memory-bound passes per parameter: the fp16/bf16 gradient widened to fp32 (read 2 B, write 4), torch's
# fused AdamW over the fp32 master, gradient, m and v (read 16, write 12), and the refreshed fp16/bf16
# weight (read 4, write 2): 40 B, at the GPU's elementwise rate. (NVIDIA apex's FusedAdam fuses the three
# into 28 B; with that count and the HBM peak rpsim predicted 3.9 ms for the 0.7B model's step on one
# H200, which e03 measured at 9.6 ms; torch's profiler showed AdamW alone moving ~3.6 TB/s.)
GPU_STEP_BYTES_PER_PARAM = 40.0


def gpu_step_s_per_param(gpu: GPUSpec) -> float:
    return GPU_STEP_BYTES_PER_PARAM / elementwise_bytes_per_s(gpu)


@dataclass(frozen=True)
class CostContext:
    plan: Plan
    costs: ModelCosts
    cpu: CpuOptimizerRates
    gpu_step_s_per_param: float  # a resident stage's optimizer step on its GPU (gpu_step_s_per_param)
    stateless: bool
    staged: dict[tuple[int, int], int]  # (layer, iteration) -> gradients downloaded for its CPU STEP
    issue: tuple[tuple[float, float, float], ...] | None = None  # HostSpec.issue_s (rpsim.sim.host_issue)
    # per pipeline layer: trainable parameters in tensors that fit the host's cache (rpsim.costs.cpu_optimizer)
    cache_resident_params: tuple[float, ...] = ()

    @classmethod
    def of(cls, plan: Plan, costs: ModelCosts, cpu: CpuOptimizerRates, gpu_step_s_per_param: float,
           issue: tuple[tuple[float, float, float], ...] | None = None) -> CostContext:
        return cls(plan, costs, cpu, gpu_step_s_per_param, not stages_are_resident(plan), staged_gradients(plan),
                   issue, tuple(cpu.layer_resident_params(x.trainable_params, x.optimizer_tensors) for x in costs.layers))

    def host_step_args(self, a: Action) -> tuple[float, int, float]:
        """A CPU STEP over one layer: (its parameters, staged gradients, cache-resident parameters)."""
        return (self.costs.layers[a.chunk].trainable_params, self.staged.get((a.chunk, a.it), 1),  # type: ignore[index]
                self.cache_resident_params[a.chunk] if self.cache_resident_params else 0.0)  # type: ignore[index]


def staged_gradients(plan: Plan) -> dict[tuple[int, int], int]:
    """How many gradient downloads (OFFLOADs) each CPU STEP of (layer, iteration) sums."""
    out: dict[tuple[int, int], int] = Counter()
    for _gpu, _lane, a in plan.items():
        if a.kind == "OFFLOAD" and a.chunk is not None:
            out[(a.chunk, a.it)] += 1
    return dict(out)


def _range(ctx: CostContext, a: Action) -> tuple[int, int]:
    phase = a.partition_phase
    return ctx.plan.partition.ranges(phase)[a.stage]  # type: ignore[index]


def duration_s(ctx: CostContext, a: Action) -> float:
    """Seconds a compute or optimizer action keeps its lane busy; transfers are timed by the network."""
    layers = ctx.costs.layers
    if a.kind in COMPUTE_KINDS:
        lo, hi = _range(ctx, a)
        span = layers[lo:hi]
        recompute = ctx.plan.recompute != "none"
        if a.kind == "F":
            return sum(x.forward_s for x in span)
        if a.kind == "FB":  # its forward is the recompute: forward + backward, nothing recomputed
            return sum(x.forward_s + x.backward_s for x in span)
        if a.kind == "B":
            return sum(x.backward_s + (x.recompute_s if recompute else 0.0) for x in span)
        # Split backward: input gradients (I, with any recompute) and weight gradients (W), half each
        # (dgrad and wgrad GEMMs have equal FLOPs; Qi et al. 2024, zero-bubble PP, Sec. 2).
        half = sum(x.backward_s for x in span) / 2
        return half + (sum(x.recompute_s for x in span) if recompute and a.kind == "I" else 0.0)
    if a.kind == "STEP":
        if a.chunk is not None:  # the CPU optimizer over one layer (rpsim.costs.cpu_optimizer)
            return ctx.cpu.step_s(*ctx.host_step_args(a))
        lo, hi = _range(ctx, a)
        params = sum(x.trainable_params for x in layers[lo:hi])
        return params * ctx.gpu_step_s_per_param
    if a.kind in ("FREE", "RECV"):
        return 0.0
    raise PlanError(f"{a} is a transfer; its time comes from the network model")


def action_issue_s(ctx: CostContext, a: Action) -> tuple[float, float] | None:
    """(interpreter seconds, engine seconds) the host spends issuing compute action `a`; None where the
    host's issue cost is not modelled or `a` issues no kernels (rpsim.sim.host_issue)."""
    if ctx.issue is None or not is_compute(a):
        return None
    lo, hi = _range(ctx, a)
    return host_issue_s(ctx.issue, lo, hi, len(ctx.costs.layers), a.kind, ctx.plan.recompute != "none")


def host_step_bytes(ctx: CostContext, a: Action) -> tuple[float, float, float, float]:
    """DRAM bytes of a host optimizer STEP's streamed accumulation, first-gradient widening, cache-resident
    accumulation and Adam phases (rpsim.costs.cpu_optimizer)."""
    return ctx.cpu.phase_bytes(*ctx.host_step_args(a))


def boundary_bytes(ctx: CostContext, layer: int) -> float:
    """The activation (or its gradient) entering pipeline layer `layer`, per microbatch."""
    return ctx.costs.layers[layer].input_bytes if 0 < layer < len(ctx.costs.layers) else 0.0


def saved_inside_bytes(ctx: CostContext, lo: int, hi: int) -> float:
    """Inputs a forward over [lo, hi) must save for backward, besides its own input."""
    p = ctx.plan
    return sum(boundary_bytes(ctx, b) for b in saved_boundaries(p.partition, p.recompute, ctx.stateless, lo, hi))


def transfer_bytes(ctx: CostContext, a: Action) -> float:
    layers = ctx.costs.layers
    if a.kind == "LOAD":
        return layers[a.chunk].weight_bytes  # type: ignore[index]
    if a.kind == "OFFLOAD":
        return layers[a.chunk].grad_bytes  # type: ignore[index]
    lo, hi = _range(ctx, a)
    forward = a.phase == "F"
    if a.kind in ("ACT_OUT", "SEND"):
        if forward:
            return boundary_bytes(ctx, hi) + (saved_inside_bytes(ctx, lo, hi) if ctx.stateless else 0.0)
        return boundary_bytes(ctx, lo)  # input gradient of a backward stage
    if a.kind == "ACT_IN":
        if forward or a.stage == len(ctx.plan.partition.bwd) - 1 and ctx.plan.partition.fused:
            return boundary_bytes(ctx, lo)
        grad = boundary_bytes(ctx, hi) if hi < len(layers) else 0.0
        saved = 0.0
        if ctx.stateless:  # a backward stage's own input and what its forward saved inside it
            saved = boundary_bytes(ctx, lo) + saved_inside_bytes(ctx, lo, hi)
        return grad + saved
    raise PlanError(f"{a} moves no bytes")
