"""How many intra-op threads the host optimizer's STEP runs on, as rpexec runs a plan on GPUs.

rpexec's default ("auto", rpexec.step_threads) leaves a core to each of the plan's other lane threads when
the optimizer is asynchronous: there the STEP runs beside busy lanes all iteration long, and an OpenMP
region that shares a core with a busy thread ends when its descheduled thread does (a llama-1.8b layer's
STEP took 965 ms beside one busy thread with all 32 threads, 93 ms with 31; benchmarks/notes-rpexec.md,
session 7). A synchronous plan's STEPs run after the backward, beside idle lanes, on every core. rpsim
prices the STEP at this count (rpsim.costs.cpu_optimizer.thread_ratio); rpexec uses the same rule."""
from __future__ import annotations


def async_step_threads(cores: int, n_lanes: int) -> int:
    """The asynchronous STEP's threads: the cores less one per other lane thread, at least one."""
    return max(1, cores - (n_lanes - 1))


# A plan whose weights stream from the host lowers to five lanes per GPU (compute, h2d, d2h, param_h2d,
# grad_d2h: rpsim.ir.plan.LANES, rpsim.passes) and one optimizer lane: what search's estimates take for a
# RoundPipe plan before it is lowered (tests/test_cpu_optimizer_curves.py checks it against make_plan).
STREAMED_LANES_PER_GPU = 5


def streamed_plan_step_threads(cores: int, n_gpus: int, async_optimizer: bool) -> int:
    """plan_step_threads of a streamed plan on `n_gpus` GPUs, without the plan."""
    return async_step_threads(cores, 1 + STREAMED_LANES_PER_GPU * n_gpus) if async_optimizer else cores


def plan_step_threads(plan, cores: int) -> int:
    """The STEP's thread count for `plan` (an rpsim.ir.Plan) on a host of `cores` cores."""
    return async_step_threads(cores, len(plan.lanes)) if plan.optimizer == "async" else cores
