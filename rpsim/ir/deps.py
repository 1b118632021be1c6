"""The one dependency rule: `dependency_graph(plan)` -> networkx DiGraph over (gpu, Action) nodes.

Edges (attribute `why`):
- lane:    consecutive actions of one lane (a lane is a CUDA stream).
- data:    a compute action's inputs (dataflow.inputs_of), routed through the plan's transfers when it
           has them (producer -> ACT_OUT -> ACT_IN -> consumer, or producer -> SEND -> RECV ->
           consumer); a direct cross-GPU data edge carries hop=True (the `hop` fidelity's fixed delay).
- weights: a job's LOADs before its first compute; a job's OFFLOADs after its last; CPU STEPs after
           every OFFLOAD of their layer and iteration; LOADs of iteration i after STEP i-1 (sync) or
           i-2 (async, staleness 1); the next OFFLOAD of a layer after its STEP (gradient buffer reuse).
           Plans without STEPs: forwards of iteration i wait for the backward of i-1 (sync) or i-2.
- window:  memory windows of stateless-GPU plans: LOADs of a GPU's job k after the FREE of its job k-2
           (one stage prefetched); ACT_IN of microbatch k+2 of a job after compute k; compute k+2
           after ACT_OUT k (double-buffered activation uploads and downloads).
Version 1 of this rule is what plan.json's `deps_version` names.
"""
from __future__ import annotations

import itertools
from collections import defaultdict

import networkx as nx

from rpsim.errors import PlanError
from rpsim.ir.action import Action
from rpsim.ir.dataflow import inputs_of, uses_split_backward
from rpsim.ir.jobs import Job, jobs_of, stages_are_resident
from rpsim.ir.plan import CPU, Plan

DEPS_VERSION = 1
Node = tuple[int, Action]


class _Index:
    """Where each action of the plan lives (actions are unique per GPU; compute actions plan-wide)."""

    def __init__(self, plan: Plan) -> None:
        self.gpu_of: dict[Action, list[int]] = defaultdict(list)
        self.steps: dict[tuple[int, int], Node] = {}  # (layer, iteration) -> the CPU STEP node
        for (gpu, _lane), _i, a in plan.items():
            self.gpu_of[a].append(gpu)
            if a.kind == "STEP" and a.chunk is not None:
                self.steps[(a.chunk, a.it)] = (gpu, a)

    def on(self, a: Action) -> int | None:
        gpus = self.gpu_of.get(a)
        return gpus[0] if gpus else None

    def has(self, a: Action, gpu: int) -> bool:
        return gpu in self.gpu_of.get(a, ())


def dependency_graph(plan: Plan) -> nx.DiGraph:
    g = nx.DiGraph()
    idx = _Index(plan)
    for (gpu, _lane), _i, a in plan.items():
        g.add_node((gpu, a))
    for (gpu, _lane), actions in plan.lanes.items():
        for a, b in itertools.pairwise(actions):
            g.add_edge((gpu, a), (gpu, b), why="lane")
    _data_edges(plan, idx, g)
    jobs = {gpu: jobs_of(plan, gpu) for gpu in range(plan.n_gpus)}
    _weight_edges(plan, idx, jobs, g)
    if not stages_are_resident(plan):
        _window_edges(plan, idx, jobs, g)
    for u, v in plan.extra_edges:
        if u not in g or v not in g:
            raise PlanError(f"extra edge {u[1]} (gpu {u[0]}) -> {v[1]} (gpu {v[0]}) names an action no lane runs")
        g.add_edge(u, v, why="explicit")
    return g


def _data_edges(plan: Plan, idx: _Index, g: nx.DiGraph) -> None:
    split = uses_split_backward([a for _, a in plan.compute_actions()])
    for gpu, x in plan.compute_actions():
        for inp in inputs_of(x, plan.partition, split):
            src = idx.on(inp.producer)
            if src is None:
                raise PlanError(f"GPU {gpu}: {x} reads the {inp.what} of {inp.producer}, which no lane runs")
            _route(plan, idx, g, (src, inp.producer), (gpu, x))


def _route(plan: Plan, idx: _Index, g: nx.DiGraph, prod: Node, cons: Node) -> None:
    (src, p), (dst, x) = prod, cons
    phase = p.partition_phase
    send = Action("SEND", p.stage, p.mb, p.it, phase, peer=dst)
    recv = Action("RECV", p.stage, p.mb, p.it, phase, peer=src)
    out = Action("ACT_OUT", p.stage, p.mb, p.it, phase)
    inn = Action("ACT_IN", x.stage, x.mb, x.it, x.partition_phase)
    if idx.has(send, src) and idx.has(recv, dst):
        g.add_edge(prod, (src, send), why="data")
        g.add_edge((src, send), (dst, recv), why="data")
        g.add_edge((dst, recv), cons, why="data")
    elif idx.has(out, src) and idx.has(inn, dst):
        g.add_edge(prod, (src, out), why="data")
        g.add_edge((src, out), (dst, inn), why="data")
        g.add_edge((dst, inn), cons, why="data")
    else:
        g.add_edge(prod, cons, why="data", hop=src != dst)


def _load(job: Job, layer: int) -> Action:
    return Action("LOAD", job.stage, job.first_mb, job.it, job.phase, chunk=layer)


def _offload(job: Job, layer: int) -> Action:
    return Action("OFFLOAD", job.stage, job.first_mb, job.it, job.phase, chunk=layer)


def _weight_edges(plan: Plan, idx: _Index, jobs: dict[int, list[Job]], g: nx.DiGraph) -> None:
    lag = 1 if plan.optimizer == "sync" else 2
    has_steps = any(lane == "optimizer" or any(a.kind == "STEP" for a in acts)
                    for (_, lane), acts in plan.lanes.items())
    offloads_of: dict[tuple[int, int], list[Node]] = defaultdict(list)
    for gpu, gpu_jobs in jobs.items():
        for job in gpu_jobs:
            a, b = plan.partition.ranges(job.phase)[job.stage]
            for layer in range(a, b):
                load, off = _load(job, layer), _offload(job, layer)
                if idx.has(load, gpu):
                    g.add_edge((gpu, load), (gpu, job.actions[0]), why="weights")
                    step = _step(idx, layer, job.it - lag)
                    if step is not None:
                        g.add_edge(step, (gpu, load), why="weights")
                if idx.has(off, gpu):
                    g.add_edge((gpu, job.actions[-1]), (gpu, off), why="weights")
                    offloads_of[(layer, job.it)].append((gpu, off))
                    prev = _step(idx, layer, job.it - 1)
                    if prev is not None:
                        g.add_edge(prev, (gpu, off), why="weights")
    for (layer, it), nodes in offloads_of.items():
        step = _step(idx, layer, it)
        for n in nodes:
            if step is not None:
                g.add_edge(n, step, why="weights")
    if not has_steps:
        _version_edges(plan, jobs, lag, g)


def _step(idx: _Index, layer: int, it: int) -> Node | None:
    return idx.steps.get((layer, it))


def _version_edges(plan: Plan, jobs: dict[int, list[Job]], lag: int, g: nx.DiGraph) -> None:
    """Compute-only plans: the first forward of each job waits for the weights it reads to be updated."""
    backward_by: dict[tuple[int, int], list[Node]] = defaultdict(list)  # (bwd stage, it) -> nodes
    for gpu, a in plan.compute_actions():
        if a.kind in ("B", "FB", "W"):
            backward_by[(a.stage, a.it)].append((gpu, a))  # type: ignore[index]
    for gpu, gpu_jobs in jobs.items():
        for job in gpu_jobs:
            first = job.actions[0]
            if first.kind not in ("F", "FB") or job.it - lag < 0:
                continue
            lo, hi = plan.partition.ranges(first.partition_phase)[first.stage]  # type: ignore[index]
            for s, (a, b) in enumerate(plan.partition.bwd):
                if a < hi and lo < b:
                    for node in backward_by[(s, job.it - lag)]:
                        g.add_edge(node, (gpu, first), why="weights")


def _window_edges(plan: Plan, idx: _Index, jobs: dict[int, list[Job]], g: nx.DiGraph) -> None:
    for gpu, gpu_jobs in jobs.items():
        for k, job in enumerate(gpu_jobs):
            if k >= 2:
                old = gpu_jobs[k - 2]
                free = Action("FREE", old.stage, old.first_mb, old.it, old.phase)
                a, b = plan.partition.ranges(job.phase)[job.stage]
                for layer in range(a, b):
                    if idx.has(free, gpu) and idx.has(_load(job, layer), gpu):
                        g.add_edge((gpu, free), (gpu, _load(job, layer)), why="window")
            acts = job.actions
            for i in range(len(acts) - 2):
                early, late = acts[i], acts[i + 2]
                inn = Action("ACT_IN", late.stage, late.mb, late.it, late.partition_phase)
                out = Action("ACT_OUT", early.stage, early.mb, early.it, early.partition_phase)
                if idx.has(inn, gpu):
                    g.add_edge((gpu, early), (gpu, inn), why="window")
                if idx.has(out, gpu):
                    g.add_edge((gpu, out), (gpu, late), why="window")


def check_acyclic(plan: Plan, g: nx.DiGraph) -> None:
    if nx.is_directed_acyclic_graph(g):
        return
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return
    nodes = [u for u, _v, *_ in cycle]
    raise PlanError("deadlock: the dependencies and lane orders form a cycle: "
                    + " -> ".join(f"gpu{gpu if gpu != CPU else '(cpu)'}:{a}" for gpu, a in nodes))
