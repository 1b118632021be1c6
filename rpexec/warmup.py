"""Warm-up before iteration 0: allocate and touch every host buffer the run will use, so that no
iteration pays page faults or pinned allocations.

Measured at 8B on 2x H200 (issue 15): iteration 0 took 35 s against ~7 s for a steady one. The host
state a run touches for the first time inside its iterations is the AdamW moments (8 bytes per
parameter, created lazily by torch at the first step), the fp32 gradient buffers, and the pinned pools
for gradient and activation downloads (cudaHostAlloc pages in and pins every byte). First touch runs at
~3 s per 8 GiB on that machine, so 64 GiB of Adam moments alone cost ~25 s when the first STEPs touch
them. Here they are touched in parallel threads, one layer per task, before the clock starts.

The optimizer state is created by torch itself (a step with lr = 0 on zero gradients, then the step
count reset to 0), so it has exactly the form and values torch's lazy initialisation gives: m = v = 0,
step = 0, weights unchanged (AdamW with lr = 0 scales them by 1 - 0 * wd and adds 0).

The pools are sized from rpsim's prediction for the plan: a sweep over the predicted trace counts the
gradient buffers in flight (from each OFFLOAD's issue to its layer's STEP's end) and the activation
buffers (from ACT_OUT's issue to the end of the ACT_IN that consumes them), and the pools allocate that
peak up front. Issue, not start: lane threads run ahead of the GPU (rpexec.issue_times). Real timings
differ a little from the prediction, so the pools can still grow; the run records by how much."""
from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import torch

from rpexec.bufferpool import BufferPool
from rpexec.hostparams import HostParams
from rpsim.ir import Plan


def warm_host_state(host: HostParams) -> float:
    """Create and touch the fp32 gradients and AdamW moments of every layer; seconds taken."""
    t = time.perf_counter()
    for layer in host.layers:  # shared buffers first, in one thread (a dict insert per name)
        for name, p in layer.named_parameters():
            host.fp32_grad(name, p)

    def touch(index: int) -> None:
        opt = host.optim[index]
        if opt is None:
            return
        params = dict(host.layers[index].named_parameters())
        with torch.no_grad():
            for name, p in params.items():
                p.grad = host.fp32_grad(name, p)
        lrs = [g["lr"] for g in opt.param_groups]
        for g in opt.param_groups:
            g["lr"] = 0.0
        opt.step()  # grads are zero: m = v = 0, weights unchanged with lr = 0
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr
        for state in opt.state.values():
            state["step"].zero_()  # as if never stepped: bias correction starts from step 1

    # a few layers at a time: each step is itself parallel (OpenMP), the threads overlap page faults
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(touch, range(len(host.layers))))
    return time.perf_counter() - t


# The pools are sized for the plan's prediction and for the same plan with the host STEP this much slower:
# in session 14-15's one-H200 runs the STEP took 0.96-1.56x rpsim's, and a slower STEP holds more
# downloads in the gradient pool, which then pinned 0.4-25 GB of new slabs inside the run (stalling
# lanes: rpexec.pool_growth). At 1.6x rpsim's plans of llama-0.7b / 1.8b need 14.7 / 43.4 GB of staged
# gradients against 11.1 / 33.7 at 1.0x, which covers the runs' 11.5-11.9 / 36-39 GB (presized + grown).
PRESIZE_STEP_SLOWDOWN = 1.6


def predicted_pool_demand(plan: Plan, host: HostParams, act_shape: tuple[int, ...], dtype: torch.dtype
                          ) -> tuple[Counter, Counter]:
    """Peak number of host buffers per (shape, dtype) that the gradient pool and the activation pool
    hold at once in rpsim's predicted trace of the plan, or of the plan with a slower host STEP
    (PRESIZE_STEP_SLOWDOWN), whichever is larger. Empty counters when the plan has no setup to
    simulate (a hand-made plan)."""
    from rpsim.errors import Infeasible
    from rpsim.host_step_speed import with_host_step_slower
    from rpsim.scenario import scenario_from_setup
    from rpsim.sim.simulate import simulate
    try:
        sc = scenario_from_setup(plan.setup, plan.n_gpus)
        traces = [simulate(plan, s).trace for s in (sc, with_host_step_slower(sc, PRESIZE_STEP_SLOWDOWN))]
    except (Infeasible, KeyError, TypeError, ValueError):  # PlanError and SpecError are ValueErrors
        return Counter(), Counter()
    param_shapes = [[tuple(p.shape) for p in layer.parameters()] for layer in host.layers]
    grads, acts = Counter(), Counter()
    for trace in traces:
        g, a = pool_demand(plan, trace, param_shapes, act_shape, dtype)
        grads, acts = grads | g, acts | a  # per buffer kind, the larger demand
    return grads, acts


def pool_demand(plan: Plan, trace, param_shapes: list[list[tuple[int, ...]]], act_shape: tuple[int, ...],
                dtype: torch.dtype) -> tuple[Counter, Counter]:
    """Peak buffers per (shape, dtype) held at once by the gradient pool (from each OFFLOAD's *issue* to
    its layer's STEP's end) and by the activation pool (from each ACT_OUT's issue to the end of the
    ACT_IN that uploads it, when its guard lets the buffer go), on `trace`'s timeline of `plan`. A buffer
    is taken when its copy is issued, ahead of the GPU (rpexec.issue_times)."""
    from rpexec.issue_times import issue_times_s
    issued = issue_times_s(plan, trace)
    events = {(e.gpu, e.action): e for e in trace.events}
    act_bytes = _numel(act_shape) * torch.empty((), dtype=dtype).element_size()
    moves: list[tuple[float, int, str, object, int]] = []  # (time, release first, pool, key, +-n)
    for (gpu, a), t_issue in issued.items():
        e = events.get((gpu, str(a)))
        if e is None:
            continue
        if a.kind == "OFFLOAD" and a.chunk is not None:
            for shape in param_shapes[a.chunk]:
                moves.append((t_issue, 1, "grad", (shape, dtype, a.chunk, a.it), 1))
        elif a.kind == "STEP" and a.chunk is not None:
            moves.append((e.end_s, 0, "step", (a.chunk, a.it), 0))
        elif a.kind in ("ACT_OUT", "ACT_IN") and e.bytes and act_bytes:
            n = round(e.bytes / act_bytes)
            moves.append((t_issue if a.kind == "ACT_OUT" else e.end_s, int(a.kind == "ACT_OUT"), "act",
                          (act_shape, dtype), n if a.kind == "ACT_OUT" else -n))
    acts: Counter = Counter()
    staged: dict[tuple, Counter] = {}  # (layer, it) -> buffers staged for its STEP, by (shape, dtype)
    in_flight: Counter = Counter()
    grads: Counter = Counter()
    live_acts = 0
    for _t, _order, pool, key, n in sorted(moves, key=lambda m: (m[0], m[1])):
        if pool == "grad":
            shape, dt, layer, it = key  # type: ignore[misc]
            staged.setdefault((layer, it), Counter())[(shape, dt)] += n
            in_flight[(shape, dt)] += n
            grads[(shape, dt)] = max(grads[(shape, dt)], in_flight[(shape, dt)])
        elif pool == "step":
            in_flight.subtract(staged.pop(key, Counter()))  # type: ignore[arg-type]
        else:
            live_acts = max(0, live_acts + n)
            acts[key] = max(acts[key], live_acts)
    return grads, acts


POOL_SHARE_OF_AVAILABLE = 0.8


def presize_pools(plan: Plan, host: HostParams, act_pool: BufferPool, act_shape: tuple[int, ...],
                  dtype: torch.dtype) -> float:
    """Allocate the predicted peak of both host pools up front (rpsim's prediction), leaving a fifth of
    the host memory still available to the rest of the machine (a prediction that overestimates must not
    take all of it; the pools grow on demand beyond it); seconds taken. Half, as before session 8, could
    not hold the 8B RoundPipe plan's 86 GiB of predicted gradient staging beside its 128 GB of model
    states on a 251 GiB host; its iterations 1-2 grew the pool mid-run, and their downloads took 4x as
    long (benchmarks/notes-rpexec.md, Session 8)."""
    t = time.perf_counter()
    grads, acts = predicted_pool_demand(plan, host, act_shape, dtype)
    demand = {k: n * _numel(k[0]) * torch.empty((), dtype=k[1]).element_size()
              for counts in (grads, acts) for k, n in counts.items()}
    scale = min(1.0, POOL_SHARE_OF_AVAILABLE * available_host_bytes() / max(1, sum(demand.values())))
    host.grad_pool.reserve({k: int(n * scale) for k, n in grads.items()})
    act_pool.reserve({k: int(n * scale) for k, n in acts.items()})
    return time.perf_counter() - t


def available_host_bytes() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
