"""A run of a plan: build the model, the host states and the devices, interpret the plan's lanes for
each block of iterations, and collect losses, captured gradients and the measured trace."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace

import torch

from rpexec.bufferpool import BufferPool
from rpexec.copy_order import with_copy_order
from rpexec.device import DeviceState
from rpexec.errors import DTYPE_NAMES
from rpexec.gc_pauses import collector_for_run
from rpexec.handlers import Context
from rpexec.hostparams import HostParams, make_adamw
from rpexec.kernel_warmup import warm_kernels
from rpexec.measure import measured_events
from rpexec.model import build_layers, skeleton_layers
from rpexec.pool_growth import growth_iterations, slabs_in_run, without_growth
from rpexec.runtime import Fault, Interpreter
from rpexec.step_threads import step_threads
from rpexec.warmup import presize_pools, warm_host_state
from rpsim.ir import Plan
from rpsim.ir.deps import dependency_graph
from rpsim.ir.jobs import job_of_action, jobs_of, residency, stages_are_resident
from rpsim.sim.trace import Trace
from rpsim.specs import ModelSpec
from rpsim.validate_run import iteration_ends_s

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp16-acc16": torch.float16}
assert tuple(DTYPES) == DTYPE_NAMES


@dataclass
class RunOptions:
    device: str = "cpu"  # cpu | cuda
    dtype: str = "fp32"
    blocks: int = 1  # the plan's iterations are run this many times, iteration numbers continuing
    seed: int = 0
    lr: float = 1e-4
    capture_grads: bool = False
    watchdog_s: float = 300.0
    fault: str | None = None
    same_batch: bool = False  # every iteration sees iteration 0's tokens (a training smoke test)
    stop: threading.Event | None = None  # set from outside (Ctrl-C) to stop every lane
    blocking_sync: bool = False  # True: host waits sleep instead of spinning (benchmarks/ab_blocking_sync.py)
    warmup: bool = True  # host state, pools and kernels before iteration 0 (rpexec.warmup, rpexec.kernel_warmup)
    # Intra-op threads while the plan runs: "auto" (a core left to each other lane thread), "all"
    # (torch's own) or a count (rpexec.step_threads).
    optimizer_threads: int | str = "auto"
    gc_freeze: bool = True  # freeze the heap made before iteration 0 (rpexec.gc_pauses)
    # "activations-first": an ACT_OUT is issued before the OFFLOADs its backward makes ready, as rpsim
    # orders them (rpexec.copy_order); "as-issued": each lane thread issues when it gets there (A/B).
    copy_order: str = "activations-first"


@dataclass
class RunResult:
    losses: dict[tuple[int, int], float]  # (mb, iteration) -> loss
    grads: dict[int, dict[str, torch.Tensor]]  # layer -> fp32 gradients of iteration 0
    trace: Trace
    load_log: list[tuple[int, int, int]] = field(default_factory=list)
    peak_gpu_mem_bytes: list[float] = field(default_factory=list)
    host_pool_bytes: dict[str, int] = field(default_factory=dict)  # reused host buffers, by use


def batch_fn(model: ModelSpec, seq: int, mb_size: int, seed: int, same_batch: bool = False, pin: bool = False):
    """Deterministic random tokens (the RoundPipe paper trains on random tokens), per (mb, iteration)."""
    cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    lock = threading.Lock()

    def get(mb: int, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        it = 0 if same_batch else it
        with lock:
            if (mb, it) not in cache:
                g = torch.Generator().manual_seed(seed * 1_000_003 + it * 1009 + mb)
                tokens = torch.randint(0, model.vocab, (mb_size, seq + 1), generator=g)
                ids, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
                cache[(mb, it)] = (ids.pin_memory(), labels.pin_memory()) if pin else (ids, labels)
            return cache[(mb, it)]
    return get


ACTIVATION_LANES = ("h2d", "d2h", "p2p", "p2p_recv")


def lane_priority(lane: str) -> int:
    """Activation transfers are on the critical path; parameter and gradient traffic fills the gaps
    (RoundPipe's priority-aware transfer engine, roundpipe.md). In CUDA a lower number is a higher
    priority; the order of issue inside a lane still comes from the plan's LPT windows."""
    return -1 if lane in ACTIVATION_LANES else 0


def make_devices(plan: Plan, opts: RunOptions) -> dict[int, DeviceState]:
    devices = {}
    for g in range(plan.n_gpus):
        if opts.device == "cuda":
            dev = torch.device("cuda", g)
            streams = {lane: torch.cuda.Stream(device=dev, priority=lane_priority(lane))
                       for (gpu, lane) in plan.lanes if gpu == g}
            devices[g] = DeviceState(g, dev, streams)
        else:
            devices[g] = DeviceState(g, torch.device("cpu"))
    return devices


def setup_resident(plan: Plan, layers: list, devices: dict[int, DeviceState], dtype: torch.dtype, lr: float) -> None:
    for g, dev in devices.items():
        stages = {a.stage for a in plan.lane(g, "compute") if a.is_compute}
        for s in stages:
            lo, hi = plan.partition.fwd[s]  # type: ignore[index]
            for layer in range(lo, hi):
                master = {n: p.detach().to(dev.device, torch.float32).clone().requires_grad_(True)
                          for n, p in layers[layer].named_parameters()}
                dev.resident_master[layer] = master
                dev.resident[layer] = {n: m.detach().to(dtype).clone().requires_grad_(True) for n, m in master.items()}
                dev.resident_optim[layer] = make_adamw(list(master.values()), lr)


def run_plan(plan: Plan, model: ModelSpec, seq: int, mb_size: int, opts: RunOptions) -> RunResult:
    torch.manual_seed(opts.seed)
    dtype = DTYPES[opts.dtype]
    layers = build_layers(model, opts.seed)
    resident = residency(plan) == "resident"
    host = HostParams(layers, dtype, pin=opts.device == "cuda", lag=1 if plan.optimizer == "sync" else 2, lr=opts.lr)
    devices = make_devices(plan, opts)
    for dev in devices.values():
        dev.skeleton = skeleton_layers(model, loss_chunk_tokens(plan))
    if resident:
        setup_resident(plan, layers, devices, dtype, opts.lr)
    jobs = {(g, j.key): j for g in range(plan.n_gpus) for j in jobs_of(plan, g)}
    ctx = Context(plan, layers, host, devices, job_of_action(plan), jobs, batch_fn(model, seq, mb_size, opts.seed, opts.same_batch, opts.device == 'cuda'),
                  {}, resident, not stages_are_resident(plan), opts.capture_grads, {}, threading.Lock(),
                  BufferPool(pin=opts.device == "cuda"))
    warm = warm_up(plan, host, ctx.act_pool, (mb_size, seq, model.hidden), dtype, not resident) if opts.warmup else {}
    if opts.warmup:
        warm["kernels"] = warm_kernels(plan, devices, host, (mb_size, seq), model.hidden)
    presized = {"gradients": host.grad_pool.allocated_bytes, "activations": ctx.act_pool.allocated_bytes}
    # One interpreter for every block: a new one per block synchronised the devices and started fresh
    # lane threads, and each block's first forward and backward then ran 40-110 ms longer on every GPU
    # (per-thread CUDA and cuBLAS set-up, the host issuing into idle devices): e03's 1-iteration plans
    # paid it every iteration (experiments/data/e03, session 4).
    full = repeat_blocks(plan, opts.blocks)
    run_ctx = replace(ctx, plan=full, job_of=job_of_action(full),
                      jobs={(g, j.key): j for g in range(plan.n_gpus) for j in jobs_of(full, g)})
    graph = dependency_graph(full)
    interp = Interpreter(full, with_copy_order(graph) if opts.copy_order == "activations-first" else graph,
                         run_ctx, opts.watchdog_s,
                         Fault.parse(opts.fault) if opts.fault else None, stop=opts.stop,
                         blocking_sync=opts.blocking_sync)
    threads_before = torch.get_num_threads()
    threads_in_run = step_threads(opts.optimizer_threads, len(plan.lanes), os.cpu_count() or 1, threads_before,
                                  opts.device, plan.optimizer == "async")
    torch.set_num_threads(threads_in_run)
    try:
        with collector_for_run(opts.gc_freeze) as gc_log:
            interp.run()
    finally:
        torch.set_num_threads(threads_before)
    events = measured_events(interp, devices)
    pools = {"gradients": host.grad_pool.allocated_bytes, "activations": ctx.act_pool.allocated_bytes}
    peaks = [float(torch.cuda.max_memory_allocated(d.device)) if d.is_cuda else 0.0 for d in devices.values()]
    losses = {k: float(v) for k, v in ctx.losses.items()}
    gpu_names = [torch.cuda.get_device_name(d.device) for d in devices.values() if d.is_cuda]
    events = tuple(sorted(events, key=lambda e: (e.start_s, e.gpu, e.lane, e.action)))
    slabs = {k: slabs_in_run(pool.arena.slab_log, interp.t0_host)
             for k, pool in (("gradients", host.grad_pool), ("activations", ctx.act_pool))}
    steady = steady_iterations(plan, opts.blocks * plan.n_iters, bool(warm))
    grew = growth_iterations(steady, iteration_ends_s(Trace(events)), [s[0] for v in slabs.values() for s in v])
    trace = Trace(events,
                  {"source": "rpexec", "schedule": plan.schedule, "device": opts.device, "dtype": opts.dtype,
                   "gpu_name": gpu_names[0] if gpu_names else "cpu",
                   "model": model.name, "n_gpus": plan.n_gpus, "peak_gpu_mem_bytes": peaks,
                   "server": str(plan.setup.get("server", "")), "warmup_s": warm, "copy_order": opts.copy_order,
                   "host_cores": os.cpu_count() or 1, "optimizer_threads": threads_in_run,
                   "steady_iterations": without_growth(steady, grew),
                   # what the pools allocated inside the iterations, beyond their warm-up sizing, and the
                   # slabs pinned for it there: one-off work that stalls lanes (rpexec.pool_growth)
                   "pool_growth_bytes": {k: pools[k] - presized[k] for k in pools},
                   "pool_slabs": slabs, "pool_growth_iterations": grew,
                   "gc": {"frozen": opts.gc_freeze, **gc_log.summary(interp.t0_host)},
                   "step_parts": step_parts_table(host.step_parts, interp.t0_host)})
    return RunResult(losses, host.captured, trace, host.load_log, peaks, pools)


def step_parts_table(parts: list[tuple[int, int, int, float, float, float, float]], t0_s: float) -> dict:
    """HostParams.step_parts as columns, the start in seconds from the trace's host zero `t0_s`."""
    cols = ("layer", "iteration", "staged", "start_s", "accumulate_s", "adam_s", "refresh_s")
    rows = [(*p[:3], p[3] - t0_s, *p[4:]) for p in parts]
    return {c: [r[i] for r in rows] for i, c in enumerate(cols)}


def warm_up(plan: Plan, host: HostParams, act_pool: BufferPool, act_shape: tuple[int, ...],
            dtype: torch.dtype, host_steps: bool) -> dict[str, float]:
    """Host state first (only when the host runs the optimizer: resident stages step on their GPU and
    never touch the host AdamW), then the pools."""
    return {"host_state": warm_host_state(host) if host_steps else 0.0,
            "pools": presize_pools(plan, host, act_pool, act_shape, dtype)}


def steady_iterations(plan: Plan, n_iters: int, warmed: bool) -> list[int]:
    """The iterations whose span (end of the previous iteration to its own end) has no one-off work.
    Iteration 0 always has some (CUDA context and allocator growth, cuBLAS handles, and the pipeline
    fill). Without the host warm-up, the first STEPs also touch the AdamW moments and fp32 gradients for
    the first time: inside iteration 0 with a synchronous optimizer, inside iteration 1 with the
    asynchronous one (STEP(0) overlaps iteration 1), so that iteration is not steady either. With the
    asynchronous optimizer each later block of the plan's iterations starts with the plan's own fill (its
    lanes drain at the plan's end; repeat_blocks runs them back to back): the issue-15 8B trace's
    iteration 4 took 11.2 s against 5.8-6.9 s for its neighbours."""
    first = 1 if warmed or plan.optimizer != "async" else 2
    block_start = plan.optimizer == "async" and plan.n_iters > 0
    return [i for i in range(first, n_iters) if not (block_start and i % plan.n_iters == 0)]


def loss_chunk_tokens(plan: Plan) -> int:
    """The plan's loss chunking (its training setup's loss_chunk_tokens; 0 = full logits)."""
    training = plan.setup.get("training") or {}
    return int(training.get("loss_chunk_tokens", 0) or 0)


def repeat_blocks(plan: Plan, blocks: int) -> Plan:
    """The plan's lanes run `blocks` times in a row, each block's iteration numbers following the last
    block's: a plan of blocks * n_iters iterations whose dependencies rpsim.ir.deps derives as for any
    plan (LOADs of iteration i after STEP i-1 or i-2, memory windows across the block boundary)."""
    if blocks == 1:
        return plan
    n = plan.n_iters
    lanes = {k: tuple(replace(a, it=a.it + b * n) for b in range(blocks) for a in v) for k, v in plan.lanes.items()}
    edges = tuple(((g1, replace(a1, it=a1.it + b * n)), (g2, replace(a2, it=a2.it + b * n)))
                  for b in range(blocks) for (g1, a1), (g2, a2) in plan.extra_edges)
    return replace(plan, lanes=lanes, extra_edges=edges, n_iters=n * blocks)
