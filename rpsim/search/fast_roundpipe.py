"""Fast estimate for RoundPipe-style schedules (stages dispatched round-robin over stateless GPUs).

Job-level list scheduling of the dispatch order (roundpipe.md): slot i of the global sequence runs on GPU
i mod N over the round's microbatches. A job starts when its GPU is free, its weights are loaded (a load
starts once the job before last on that GPU freed its buffer, and in async plans once the optimizer
step two iterations back is done) and the previous slot's first microbatch has come through host
memory; it ends no earlier than the previous slot's last microbatch plus one of its own (exact for
evenly paced predecessors). The CPU optimizer steps layers deepest first after their gradient
downloads. GPU memory is tracked per job as the simulator counts it (rpsim.sim.memory). Backward jobs
with deferred W pass each microbatch on after its I and end with their trailing W passes, holding what
each I keeps for its W (rpsim.search.fast_deferred_w). O(jobs) per iteration, no per-microbatch events."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.ir import Partition
from rpsim.metrics.summary import MAX_CYCLE_PERIODS, steady_spans, steady_tail
from rpsim.schedules.roundpipe import dispatch_period, round_sizes
from rpsim.search.fast_context import FastContext
from rpsim.search.fast_deferred_w import DeferredW, deferred_w_of
from rpsim.sim.memory import ALLOCATOR_OVERHEAD
from rpsim.sim.steady import FIRST_SPAN

IN_BUFFERS = 3  # activation uploads run up to two microbatches ahead of compute (rpsim.ir.deps windows)
OUT_BUFFERS = 2  # downloads may lag compute by two microbatches


@dataclass(frozen=True)
class Slot:
    kind: str  # F | FB | B
    bwd_stage: int  # the backward stage of its shallowest layer, the last its optimizer steps
    t_s: float  # compute seconds per microbatch
    in_bytes: float  # activation upload per microbatch
    out_bytes: float  # activation download per microbatch
    weight_bytes: float
    grad_bytes: float
    params: float
    work_bytes: float  # activation working set while computing one microbatch
    resident_params: float = 0.0  # of params, in tensors whose accumulation fits the host's cache
    deferred: DeferredW | None = None  # a backward split into I and W passes (rpsim.search.fast_deferred_w)

    @property
    def out_s(self) -> float:
        """Seconds from a microbatch's start to its output: all of it, or its I where W is deferred."""
        return self.t_s - self.deferred.w_s if self.deferred else self.t_s

    def job_shape(self, size: int) -> JobShape:
        """How a job of `size` microbatches of this slot computes (_Dispatch reads it per job)."""
        if not self.deferred:
            return JobShape(self.t_s, 0.0, None)
        return JobShape(self.out_s, self.deferred.tail_s(size),
                        self.deferred.phases(size, self.out_s, self.grad_bytes))


@dataclass(frozen=True)
class JobShape:
    out_s: float  # from a microbatch's start to its output
    tail_s: float  # computing after the job's last output: trailing deferred W passes
    # (seconds into the job, gradients and working set at their largest from then on) where W is deferred
    # (rpsim.search.fast_deferred_w); None: the slot's gradients and working set, from the start
    phases: tuple[tuple[float, float], ...] | None


def slots_of(ctx: FastContext, part: Partition, defer_w: bool = False) -> list[Slot]:
    """One round's stage slots: forward stages, the fused stage, backward stages deep to shallow;
    `defer_w`: the backward jobs but the fused one split into I and W (rpsim.schedules.roundpipe)."""
    layer_mode = ctx.recompute == "layer"
    starts = {a for a, _b in part.bwd}
    bwd_of = {}
    for s, (a, b) in enumerate(part.bwd):
        for layer in range(a, b):
            bwd_of[layer] = s

    def saved_inside(a: int, b: int) -> float:
        if layer_mode:
            return ctx.inp_sum(a + 1, b)
        return sum(ctx.boundary(x) for x in starts if a < x < b)

    out = []
    for a, b in part.fwd:
        out.append(Slot("F", bwd_of[a], ctx.f(a, b), ctx.boundary(a), ctx.boundary(b) + saved_inside(a, b),
                        ctx.weight(a, b), 0.0, 0.0, ctx.forward_work(a, b) if ctx.recompute != "none" else ctx.max_act(a, b)))
    last = len(part.bwd) - 1
    for s in range(last, -1, -1):
        a, b = part.bwd[s]
        fused = s == last and part.fused
        if fused:
            t, inb = ctx.f(a, b) + ctx.b(a, b), ctx.boundary(a)
        else:
            t = ctx.b(a, b) + (ctx.r(a, b) if ctx.recompute != "none" else 0.0)
            inb = ctx.boundary(b) + ctx.boundary(a) + (ctx.inp_sum(a + 1, b) if layer_mode else 0.0)
        # rpsim.sim.memory's rule: a layer-grain backward recomputes one layer at a time; FB all at once.
        work = ctx.backward_work(a, b, layer_mode and not fused)
        deferred = deferred_w_of(ctx, a, b) if defer_w and not fused else None
        out.append(Slot("FB" if fused else "B", s, t, inb, ctx.boundary(a), ctx.weight(a, b), ctx.grad(a, b),
                        ctx.params(a, b), work, ctx.resident(a, b), deferred))
    return out


@dataclass(frozen=True)
class RoundPipeEstimate:
    iteration_s: float
    peak_gpu_bytes: float
    peak_host_bytes: float
    h2d_bytes: float  # mean per GPU per iteration
    d2h_bytes: float


def estimate_roundpipe(ctx: FastContext, part: Partition, round_size: int | None, is_async: bool,
                       defer_w: bool = False) -> RoundPipeEstimate:
    n, m = ctx.n_gpus, ctx.n_mb
    rounds = round_sizes(m, n, round_size)
    size = max(rounds)
    slots = slots_of(ctx, part, defer_w)
    links = ctx.links
    hop = [0.0] + [slots[i - 1].out_bytes / links.link_d2h_bytes_per_s
                   + slots[i].in_bytes / links.link_h2d_bytes_per_s + 2 * links.latency_s
                   for i in range(1, len(slots))]
    run = _Dispatch(ctx, slots, is_async)
    iteration = run.iterations(hop, rounds)
    h2d = sum(len(rounds) * s.weight_bytes + m * s.in_bytes for s in slots) / n
    d2h = sum(len(rounds) * s.grad_bytes + m * s.out_bytes for s in slots) / n
    iteration = max(iteration, links.volume_s(h2d, d2h))
    if is_async:
        # The CPU steps every layer once per iteration, and the GPUs share the iteration's compute:
        # neither can be beaten in a steady state (a few simulated iterations can seem to).
        cpu_s = ctx.cpu_async.step_s(ctx.params(0, ctx.n_layers), len(rounds),  # a download per round and layer
                                     ctx.resident(0, ctx.n_layers))
        iteration = max(iteration, cpu_s, work_bound_s(ctx, slots))
    per_mb = sum(s.out_bytes for s in slots)
    states = ctx.weight(0, ctx.n_layers) + ctx.grad(0, ctx.n_layers) + ctx.optim(0, ctx.n_layers)
    # Host: model states, and the stage outputs of every microbatch alive (kept until its last backward;
    # a round overlaps the next).
    host = states + per_mb * min(m, 2 * size)
    return RoundPipeEstimate(iteration, run.peak_gpu * ALLOCATOR_OVERHEAD, host, h2d, d2h)


def work_bound_s(ctx: FastContext, slots: list[Slot]) -> float:
    """Every GPU-second of one iteration's compute, shared evenly by the GPUs."""
    return ctx.n_mb * sum(s.t_s for s in slots) / ctx.n_gpus


class _Dispatch:
    """The job-level list schedule of the dispatch order, and each GPU's peak memory: a job's weights,
    its gradients and those still waiting to download (an async download waits for the previous
    iteration's step of its layers), its activation working set and upload / download buffers; plus the
    next job's weights when their prefetch starts before the job ends."""

    def __init__(self, ctx: FastContext, slots: list[Slot], is_async: bool) -> None:
        n = ctx.n_gpus
        self.ctx, self.slots, self.is_async = ctx, slots, is_async
        self.cpu = ctx.cpu_async if is_async else ctx.cpu  # the STEP's rates at its thread count
        self.n_bwd = max(s.bwd_stage for s in slots) + 1
        self.load_rate = ctx.links.h2d_bytes_per_s
        self.first_rate = ctx.links.first_load_bytes_per_s  # no GPU downloads yet: nearly the full rate
        self.grad_rate = ctx.links.link_d2h_bytes_per_s * ctx.links.duplex
        self.free = [0.0] * n  # when each GPU's compute lane frees
        self.last_start = [0.0] * n  # start of each GPU's previous job (its windows issue the next load)
        self.before_last_end = [0.0] * n  # end of the job before that: its FREE releases the prefetch buffer
        self.load_end = [0.0] * n
        self.grad_lane = [0.0] * n
        self.pending: list[list[tuple[float, float]]] = [[] for _ in range(n)]  # (download end, bytes)
        self.prev_need = [0.0] * n  # each GPU's last job's memory, without the next job's weights
        self.prev_end = [0.0] * n
        self.peak_gpu = 0.0
        self.q = 0
        self.shapes: dict[int, list[JobShape]] = {}  # per round size, per slot

    def iterations(self, hop: list[float], rounds: list[int]) -> float:
        n, slots, n_bwd = self.ctx.n_gpus, self.slots, self.n_bwd
        params, resident = [0.0] * n_bwd, [0.0] * n_bwd
        for s in slots:
            if s.kind != "F":
                params[s.bwd_stage], resident[s.bwd_stage] = s.params, s.resident_params
        steps: list[list[float]] = []  # per iteration, per backward stage: end of its CPU step
        cpu, ends = 0.0, []
        n_iters, period = 1, 1
        if self.is_async:  # enough iterations for rpsim.metrics.summary.steady_cycle's longest cycle
            period = dispatch_period(n, len(rounds), len(slots))
            n_iters = FIRST_SPAN + 2 * MAX_CYCLE_PERIODS * period + 1
        for it in range(n_iters):
            gate = steps[it - 2] if self.is_async and it >= 2 else None
            reuse = steps[it - 1] if self.is_async and it >= 1 else None
            ready = [0.0] * n_bwd  # when each backward stage's gradients are all downloaded
            ends.append(max(self.round(size, hop, gate, reuse, ready) for size in rounds))
            done = [0.0] * n_bwd
            for stage in range(n_bwd - 1, -1, -1):  # deepest layers first, as gradients complete
                cpu = max(cpu, ready[stage]) + self.cpu.step_s(params[stage], len(rounds), resident[stage])
                done[stage] = cpu
            steps.append(done)
        if not self.is_async:
            return max(ends[0], cpu)
        tail = steady_tail(steady_spans(ends, n_iters - 1), period)  # as rpsim.metrics.summary
        return sum(tail) / len(tail)

    def round(self, size: int, hop: list[float], gate: list[float] | None, reuse: list[float] | None,
              ready: list[float]) -> float:
        n, slots = self.ctx.n_gpus, self.slots
        if size not in self.shapes:
            self.shapes[size] = [s.job_shape(size) for s in slots]
        shapes = self.shapes[size]
        prev_first = prev_end = end = 0.0
        for i, s in enumerate(slots):
            shape = shapes[i]
            g = self.q % n
            self.q += 1
            begin = max(self.before_last_end[g], self.last_start[g], self.load_end[g])
            if gate is not None:
                # Loads wait for the step of their layer two iterations back (staleness 1), in one FIFO
                # lane, largest layer first, ties shallowest first (rpsim.passes.weights): the first is
                # the embedding, the head or the shallowest layer, so the job waits for its last step.
                begin = max(begin, gate[s.bwd_stage])
            # Prefetched weights arrive during this GPU's previous job, unless they wait past its end.
            if begin < self.prev_end[g]:
                self.peak_gpu = max(self.peak_gpu, self.prev_need[g] + s.weight_bytes)
            loaded = begin + s.weight_bytes / (self.load_rate if self.q > n else self.first_rate)
            self.load_end[g] = loaded
            start = max(self.free[g], loaded, prev_first + hop[i] if i else 0.0)
            # Outputs leave after a microbatch's I; a deferred W trails its job's last output.
            end = start + size * s.t_s
            if i:
                end = max(end, prev_end + hop[i] + shape.out_s + shape.tail_s)
            prev_first = start + shape.out_s
            prev_end = end - shape.tail_s  # the job's last output (W passes need no input from the slot before)
            self.before_last_end[g], self.last_start[g], self.free[g] = self.free[g], start, end
            self.memory(g, s, start, end, shape.phases)
            if s.grad_bytes:
                off = max(self.grad_lane[g], end, reuse[s.bwd_stage] if reuse else 0.0)
                self.grad_lane[g] = off + s.grad_bytes / self.grad_rate
                ready[s.bwd_stage] = max(ready[s.bwd_stage], self.grad_lane[g])
                self.pending[g].append((self.grad_lane[g], s.grad_bytes))
        return end

    def memory(self, g: int, s: Slot, start: float, end: float, phases: tuple[tuple[float, float], ...] | None
               ) -> None:
        pending = self.pending[g] = [x for x in self.pending[g] if x[0] > start]
        if phases is None:
            need = (s.weight_bytes + s.grad_bytes + sum(b for _e, b in pending)
                    + s.work_bytes + IN_BUFFERS * s.in_bytes + OUT_BUFFERS * s.out_bytes)
        else:  # each phase beside the downloads still pending when it begins
            held = max(b + sum(n for e, n in pending if e > start + t) for t, b in phases)
            need = s.weight_bytes + held + IN_BUFFERS * s.in_bytes + OUT_BUFFERS * s.out_bytes
        self.peak_gpu = max(self.peak_gpu, need)
        self.prev_need[g], self.prev_end[g] = need, end
