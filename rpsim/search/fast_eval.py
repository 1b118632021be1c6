"""The fast evaluator: an analytic estimate of a candidate plan's iteration time and peak GPU and host
memory, about a millisecond per candidate, used to prune the search before the full simulator confirms.

Per schedule family (rpsim.search.fast_fixed, rpsim.search.fast_roundpipe) it combines per-stage compute
times, transfer volumes over the bottleneck links (each GPU's PCIe link, shared root complexes, host
DRAM), the CPU optimizer and memory by the simulator's rules. It is optimistic where overlap is
uncertain and meant to rank plans as the simulator does (tests check the rank correlation), not to
replace it. Pure: builds no lowered plan and runs no SimPy."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.ir import Partition
from rpsim.schedules import traits_of
from rpsim.search.fast_context import FastContext
from rpsim.search.fast_fixed import FixedEstimate, estimate_fixed
from rpsim.search.fast_roundpipe import RoundPipeEstimate, estimate_roundpipe

GiB = 2**30


@dataclass(frozen=True)
class Estimate:
    iteration_s: float
    tokens_per_s: float
    peak_gpu_bytes: float
    peak_host_bytes: float
    fill: float  # the larger share of GPU or host memory it needs: above 1 it does not fit
    reason: str = ""  # why it does not fit; "" when it does

    @property
    def feasible(self) -> bool:
        return not self.reason


def is_async(schedule: str) -> bool:
    """As rpsim.planner.make_plan decides: by the schedule's optimizer trait."""
    return traits_of(schedule).optimizer == "async"


def has_fast_estimate(schedule: str, defer_w: bool = False) -> bool:
    """False for families the analytic estimators do not model (split backward, V shapes), and for
    deferred W outside the round-robin family: search times those with the list-scheduling timer instead
    (rpsim.search.fast_list)."""
    family = traits_of(schedule).fast_estimate
    return family is not None and (not defer_w or family == "round-robin")


def estimate(ctx: FastContext, schedule: str, part: Partition, virtual_stages: int = 1,
             round_size: int | None = None, defer_w: bool = False) -> Estimate:
    """`defer_w`: backward jobs split into I and W (BuildOptions.defer_w), which only the round-robin
    estimate models."""
    e: FixedEstimate | RoundPipeEstimate
    family = traits_of(schedule).fast_estimate
    if defer_w and family != "round-robin":
        raise ValueError(f"schedule {schedule!r}: no fast estimate of deferred W; use rpsim.search.fast_list")
    if family == "fixed-fb":
        e = estimate_fixed(ctx, schedule, part, virtual_stages)
    elif family == "round-robin":
        e = estimate_roundpipe(ctx, part, round_size, is_async(schedule), defer_w)
    else:
        raise ValueError(f"schedule {schedule!r} has no fast estimator; use rpsim.search.fast_list")
    return finish(ctx, e.iteration_s, e.peak_gpu_bytes, e.peak_host_bytes)


def finish(ctx: FastContext, iteration_s: float, gpu_bytes: float, host_bytes: float) -> Estimate:
    reason = ""
    if gpu_bytes > ctx.gpu_memory_bytes:
        reason = f"needs ~{gpu_bytes / GiB:.1f} GiB per GPU, has {ctx.gpu_memory_bytes / GiB:.1f} GiB"
    elif host_bytes > ctx.host_memory_bytes:
        reason = f"needs ~{host_bytes / GiB:.0f} GiB host memory, has {ctx.host_memory_bytes / GiB:.0f} GiB"
    tokens = ctx.tokens_per_iteration / iteration_s if iteration_s > 0 else 0.0
    fill = max(gpu_bytes / ctx.gpu_memory_bytes, host_bytes / ctx.host_memory_bytes)
    return Estimate(iteration_s, tokens, gpu_bytes, host_bytes, fill, reason)
