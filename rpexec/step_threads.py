"""How many intra-op threads the host optimizer's STEP runs on while a plan runs.

The STEP's torch ops are OpenMP parallel regions, and a region ends when its slowest thread does. With
one thread per core (torch's default), any lane thread that is busy (issuing kernels, or spin-waiting
on a CUDA event, as the runtime does by default) shares a core with one of the STEP's threads, which is
then descheduled for whole scheduler slices: on 2x H200 a llama-1.8b layer's STEP took 965 ms beside
one busy thread with 32 threads, and 93 ms with 31 (87 ms alone; benchmarks/step_in_context.py,
benchmarks/notes-rpexec.md, session 7). So by default the STEP leaves a core to every other lane
thread of the plan, where its STEP runs beside the lanes all iteration long: with the asynchronous
optimizer (same lease, llama-1.8b on one GPU: 3.258 -> 2.763 s per iteration, its STEPs beside compute
199 -> 126 ms). A synchronous plan's STEPs run mostly after the backward, beside idle lanes; there "auto"
keeps torch's own count (three sync runs with fewer threads, each on another lease than its baseline,
gave -6%, +20% and +59%: experiments/data/rpexec-bench/sync-step-threads/). On the CPU device the lanes
compute on the same intra-op pool, so there "auto" keeps torch's own count too.
"""
from __future__ import annotations

from rpsim.costs.optimizer_threads import async_step_threads
from rpsim.errors import SpecError

CHOICES = "auto (the default: the cores less one per other lane thread), all (one per core), or an integer"


def step_threads(setting: int | str, n_lanes: int, cores: int, all_threads: int, device: str = "cuda",
                 async_optimizer: bool = True) -> int:
    """The thread count for `setting`: "auto" leaves a core to each of the plan's other lane threads
    (at least one thread) when an asynchronous optimizer runs on a GPU plan, else it is `all_threads`;
    "all" is `all_threads` (torch's own count); an integer is taken as it is once checked against the
    machine's cores."""
    if setting == "auto" and device != "cpu" and async_optimizer:
        return async_step_threads(cores, n_lanes)
    if setting in ("all", "auto"):
        return all_threads
    try:
        n = int(setting)
    except (TypeError, ValueError):
        n = 0
    if str(n) != str(setting).strip() or not 1 <= n <= cores:
        raise SpecError(f"--optimizer-threads {setting}: valid: {CHOICES} 1..{cores} (this machine's cores)")
    return n
