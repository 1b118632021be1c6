"""The entry point of lowering: which passes a fidelity level runs, in order."""
from __future__ import annotations

from dataclasses import dataclass, replace

from rpsim.costs import ModelCosts
from rpsim.errors import SpecError
from rpsim.ir import Plan
from rpsim.ir.jobs import stages_bound_to_gpus
from rpsim.passes.activations import add_activation_transfers
from rpsim.passes.residency import resident_fits
from rpsim.passes.weights import add_resident_steps, add_weight_streaming
from rpsim.specs import ServerSpec

LEVELS = ("ideal", "hop", "pcie")
WEIGHT_POLICIES = ("auto", "resident", "stream")


@dataclass(frozen=True)
class LoweringContext:
    costs: ModelCosts
    server: ServerSpec
    weights: str = "auto"  # fixed-placement baselines: keep weights on their GPU, stream them, or decide


def lower(plan: Plan, level: str, ctx: LoweringContext) -> Plan:
    if level not in LEVELS:
        raise SpecError(f"fidelity {level!r} unknown; valid choices: {', '.join(LEVELS)}")
    if ctx.weights not in WEIGHT_POLICIES:
        raise SpecError(f"weights {ctx.weights!r} unknown; valid choices: {', '.join(WEIGHT_POLICIES)}")
    if plan.level != "compute":
        raise SpecError(f"plan is already lowered (level {plan.level!r}); lower a builder's compute plan")
    if plan.n_gpus != ctx.server.n_gpus:
        raise SpecError(f"plan has {plan.n_gpus} GPUs, server {ctx.server.name!r} has {ctx.server.n_gpus}")
    bound = stages_bound_to_gpus(plan)
    if level in ("ideal", "hop"):
        return replace(plan, level=level, residency="resident" if bound else "stateless")
    resident = bound and (
        ctx.weights == "resident" or (ctx.weights == "auto" and resident_fits(plan, ctx.costs, ctx.server)))
    plan = replace(plan, residency="resident" if resident else "streamed" if bound else "stateless")
    lanes = {k: tuple(v) for k, v in plan.lanes.items()}
    lanes = add_activation_transfers(plan, lanes, use_p2p=ctx.server.p2p != "none" and bound)
    if resident:
        lanes = add_resident_steps(plan, lanes)
        extra: tuple = ()
    else:
        lanes, extra = add_weight_streaming(plan, lanes, ctx.costs)
    options = {**plan.options, "weights": "resident" if resident else "streamed"}
    return replace(plan.with_lanes(lanes, level="pcie"), options=options, extra_edges=extra)
