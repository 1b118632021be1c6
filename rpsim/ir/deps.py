"""The one dependency rule: `dependency_graph(plan)` -> networkx DiGraph over (gpu, Action) nodes.

Edges (attribute `why`):
- lane:    consecutive actions of one lane (a lane is a CUDA stream).
- data:    a compute action's inputs (dataflow.inputs_of), routed through the plan's transfers when it
           has them (producer -> ACT_OUT -> ACT_IN -> consumer, or producer -> SEND -> RECV ->
           consumer); a direct cross-GPU data edge carries hop=True (the `hop` fidelity's fixed delay).
- weights (rpsim.ir.weight_deps): a job's LOADs before its first compute; a job's OFFLOADs after its last; CPU STEPs after
           every OFFLOAD of their layer and iteration; LOADs of iteration i after STEP i-1 (sync) or
           i-2 (async, staleness 1); then, by plan option grad_fence: absent or "offload", the next
           OFFLOAD of a layer after its STEP (one host gradient buffer per layer, reused); "backward"
           (the roundpipe library, attribute.py LayerAttribute.backward_fence: a backward job waits for
           the previous iteration's gradient copy, made when that step starts), the first compute of a
           backward job after STEP i-2; "none", nothing more (every download takes a host buffer of its
           own until its STEP has summed it, so a gradient waits for the optimizer in host memory, not
           on the GPU; the LOADs' wait for STEP i-2 bounds the backlog to two iterations per layer).
           Plans without STEPs: forwards of iteration i wait for the backward of i-1 (sync) or i-2.
- window:  memory windows of stateless-GPU plans: LOADs of a GPU's job k after the FREE of its job k-2
           (one stage prefetched); ACT_IN of microbatch k+2 of a job after compute k; compute k+2
           after ACT_OUT k (double-buffered activation uploads and downloads).
Version 1 of this rule is what plan.json's `deps_version` names.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rpsim.errors import PlanError
from rpsim.ir.action import COMPUTE_KINDS, Action
from rpsim.ir.dataflow import EITHER_BACKWARD, inputs_of, uses_split_backward
from rpsim.ir.jobs import Job, jobs_of, stages_are_resident
from rpsim.ir.plan import CPU, Plan
from rpsim.ir.weight_deps import weight_edges

if TYPE_CHECKING:
    import networkx as nx  # imported where a networkx graph is made: `rpsim compare` never needs one

DEPS_VERSION = 1
Node = tuple[int, Action]
Key = tuple[Any, ...]  # (gpu, kind, stage, mb, it, phase, chunk, peer)


class _Index:
    """Where each action of the plan lives (actions are unique per GPU; compute actions plan-wide).

    Nodes are numbered and looked up by field tuples: building an Action per query and comparing it with
    the plan's (dataclass __eq__), or hashing (gpu, Action) tuples (Action.__hash__ is Python), was most
    of the time on plans of 10^4-10^5 actions.
    """

    def __init__(self, plan: Plan) -> None:
        self.ids: dict[Key, int] = {}
        self.nodes: list[Node] = []  # by id, in first-appearance order (the graph's node order)
        self.lanes: list[list[int]] = []
        self.compute: dict[tuple, int] = {}  # (kind, stage, mb, it) -> where it runs (first, if twice)
        self.compute_order: list[int] = []  # compute actions in plan.compute_actions() order
        self.steps: dict[tuple[int, int], int] = {}  # (layer, iteration) -> the CPU STEP
        ids, nodes, compute, compute_order = self.ids, self.nodes, self.compute, self.compute_order
        for (gpu, lane_name), actions in sorted(plan.lanes.items()):
            lane = []
            for a in actions:
                kind = a.kind
                key = (gpu, kind, a.stage, a.mb, a.it, a.phase, a.chunk, a.peer)
                i = ids.get(key)
                if i is None:
                    i = ids[key] = len(nodes)
                    nodes.append((gpu, a))
                lane.append(i)
                if kind in _COMPUTE:
                    compute.setdefault((kind, a.stage, a.mb, a.it), i)
                    if lane_name == "compute":
                        compute_order.append(i)
                elif kind == "STEP" and a.chunk is not None:
                    self.steps[(a.chunk, a.it)] = i
            self.lanes.append(lane)

    def find(self, gpu: int, kind: str, stage: int | None, mb: int | None, it: int, phase: str | None,
             chunk: int | None = None, peer: int | None = None) -> int | None:
        return self.ids.get((gpu, kind, stage, mb, it, phase, chunk, peer))

    def id_of(self, gpu: int, a: Action) -> int:
        return self.ids[(gpu, a.kind, a.stage, a.mb, a.it, a.phase, a.chunk, a.peer)]

    def find_node(self, node: Node) -> int | None:
        gpu, a = node
        return self.ids.get((gpu, a.kind, a.stage, a.mb, a.it, a.phase, a.chunk, a.peer))


_COMPUTE = frozenset(COMPUTE_KINDS)


@dataclass(frozen=True)
class DependencyFacts:
    """The dependency graph by node id, as the engine and the checks walk it, and what its build found
    out; the networkx graph (`dependency_graph`) is made from it only for callers that ask for one.
    Hashing (gpu, Action) nodes (Action.__hash__ is Python) several times per edge and action, writing
    networkx's dicts and reading them back, was a fifth of a simulation and a third of the graph's build.

    `nodes[i]` is node i (the graph's node order); `lanes[k]` the ids of the k-th lane of
    sorted(plan.lanes); `waits[i]` the ids node i waits on across lanes (its predecessors by non-lane
    edges, in the graph's predecessor order); `hops[i]` those of them whose edge carries hop=True.
    `acyclic`: whether the graph has no cycle; `hop_edges`: its hop=True edges, in edge order."""

    nodes: list[Node]
    lanes: list[list[int]]
    waits: Sequence[Sequence[int]]
    hops: Sequence[Sequence[int]]
    acyclic: bool
    hop_edges: list[tuple[Node, Node]]
    edges: dict[tuple[int, int], dict[str, Any]]  # (u id, v id) -> attributes, in insertion order


class _Edges:
    """Edges between node ids, with nx.DiGraph.add_edge's semantics: a repeated edge merges its
    attributes; successor and predecessor orders are insertion orders."""

    def __init__(self) -> None:
        self.attrs: dict[tuple[int, int], dict[str, Any]] = {}
        self.any_hop = False  # some direct data edge crossed GPUs (a pcie plan missing a transfer)

    def add(self, u: int, v: int, why: str) -> None:
        d = self.attrs.get((u, v))
        if d is None:
            self.attrs[(u, v)] = {"why": why}
        else:
            d["why"] = why

    def add_data(self, u: int, v: int, hop: bool) -> None:
        """A direct data edge; `hop`: it crosses GPUs with no transfer (the `hop` fidelity's delay)."""
        self.any_hop = self.any_hop or hop
        d = self.attrs.get((u, v))
        if d is None:
            self.attrs[(u, v)] = {"why": "data", "hop": hop}
        else:
            d.update(why="data", hop=hop)

    def acyclic(self, n: int) -> bool:
        """Whether the edges over `n` node ids form no cycle (Kahn's algorithm on the ids: networkx's test
        hashed every node again, 1/4 of make_plan on a 64-GPU plan)."""
        out_ids: list[list[int]] = [[] for _ in range(n)]
        indegree = [0] * n
        for u, v in self.attrs:
            out_ids[u].append(v)
            indegree[v] += 1
        ready = [i for i in range(n) if not indegree[i]]
        done = 0
        while ready:
            u = ready.pop()
            done += 1
            for v in out_ids[u]:
                indegree[v] -= 1
                if not indegree[v]:
                    ready.append(v)
        return done == n

    def waits(self, n: int) -> tuple[list[list[int]], list[list[int]] | list[tuple[()]]]:
        """Per node id: the ids it waits on across lanes (its non-lane predecessors, in predecessor order),
        and those of them whose edge carries hop=True."""
        waits: list[list[int]] = [[] for _ in range(n)]
        attrs = self.attrs
        if not self.any_hop:
            for (u, v), d in attrs.items():
                if d["why"] != "lane":
                    waits[v].append(u)
            return waits, [()] * n
        hops: list[list[int]] = [[] for _ in range(n)]
        for (u, v), d in attrs.items():
            if d["why"] != "lane":
                waits[v].append(u)
                if d.get("hop"):
                    hops[v].append(u)
        return waits, hops

    def hop_edges(self, nodes: list[Node]) -> list[tuple[Node, Node]]:
        """The edges with hop=True, in the graph's edge order (by source node, then insertion)."""
        if not self.any_hop:
            return []
        hops = [(u, v) for (u, v), d in self.attrs.items() if d.get("hop")]
        hops.sort(key=lambda e: e[0])  # stable: insertion order within one source
        return [(nodes[u], nodes[v]) for u, v in hops]


def dependency_facts(plan: Plan) -> DependencyFacts:
    """The plan's dependency graph by node id, built once per Plan object and shared by every caller
    (check_plan builds it, simulate reuses it): a Plan is frozen, so it cannot go stale."""
    facts = plan.__dict__.get(_FACTS_KEY)
    if facts is None:
        facts = _build_dependency_facts(plan)
        object.__setattr__(plan, _FACTS_KEY, facts)  # a cache, not a field: equality and replace() ignore it
    return facts  # type: ignore[no-any-return]


def dependency_graph(plan: Plan) -> nx.DiGraph:
    """The plan's dependency graph as networkx, made from `dependency_facts` once per Plan object on the
    first call (the checks and the engine do not need it). Callers must not modify it. Its `graph` dict
    holds what the build found out: "acyclic" (bool), "hop_edges" (direct cross-GPU data edges, in edge
    order) and "facts" (the DependencyFacts)."""
    graph = plan.__dict__.get(_CACHE_KEY)
    if graph is None:
        graph = _networkx_graph(dependency_facts(plan))
        object.__setattr__(plan, _CACHE_KEY, graph)
    return graph


_CACHE_KEY = "_dependency_graph"
_FACTS_KEY = "_dependency_facts"


def _build_dependency_graph(plan: Plan) -> nx.DiGraph:
    """A new networkx graph of the plan (uncached: what building one costs)."""
    return _networkx_graph(_build_dependency_facts(plan))


def _networkx_graph(facts: DependencyFacts) -> nx.DiGraph:
    """Write the nodes and edges into a new graph through the dicts networkx documents for subclasses
    (G._node, G._succ, G._pred: node -> neighbour -> attributes), in the order add_node and add_edge would
    give: their checks, and hashing each node several times per edge, were half of building a 10^5-edge
    graph."""
    import networkx as nx

    g = nx.DiGraph()
    nodes = facts.nodes
    n = len(nodes)
    succ: list[dict] = [{} for _ in range(n)]
    pred: list[dict] = [{} for _ in range(n)]
    for (u, v), d in facts.edges.items():
        succ[u][nodes[v]] = d
        pred[v][nodes[u]] = d
    g._node.update(zip(nodes, ({} for _ in range(n))))
    g._succ.update(zip(nodes, succ))
    g._pred.update(zip(nodes, pred))
    g.graph.update(acyclic=facts.acyclic, hop_edges=facts.hop_edges, facts=facts)
    return g


def _build_dependency_facts(plan: Plan) -> DependencyFacts:
    idx = _Index(plan)
    edges = _Edges()
    # The lane edges come first and are new (a repeated pair keeps its first place, as add() would).
    edges.attrs = {(u, v): {"why": "lane"} for lane in idx.lanes for u, v in itertools.pairwise(lane)}
    _data_edges(plan, idx, edges)
    jobs = {gpu: jobs_of(plan, gpu) for gpu in range(plan.n_gpus)}
    weight_edges(plan, idx, jobs, edges)
    if not stages_are_resident(plan):
        _window_edges(plan, idx, jobs, edges)
    for tail, head in plan.extra_edges:
        iu, iv = idx.find_node(tail), idx.find_node(head)
        if iu is None or iv is None:
            raise PlanError(f"extra edge {tail[1]} (gpu {tail[0]}) -> {head[1]} (gpu {head[0]}) names an action "
                            f"no lane runs")
        edges.add(iu, iv, "explicit")
    n = len(idx.nodes)
    return DependencyFacts(idx.nodes, idx.lanes, *edges.waits(n), edges.acyclic(n), edges.hop_edges(idx.nodes),
                           edges.attrs)


def _data_edges(plan: Plan, idx: _Index, edges: _Edges) -> None:
    split = uses_split_backward([a for _, a in plan.compute_actions()])
    # inputs_of reads the same microbatch and iteration as its consumer, so its answer for one
    # (kind, stage) serves every microbatch and iteration: asked once each, not once per action.
    inputs: dict[tuple[str, int | None], list[tuple[str, str, int | None]]] = {}
    nodes, compute = idx.nodes, idx.compute
    for cons in idx.compute_order:
        gpu, x = nodes[cons]
        shape = (x.kind, x.stage)
        shape_inputs = inputs.get(shape)
        if shape_inputs is None:
            shape_inputs = inputs[shape] = [(i.what, i.producer.kind, i.producer.stage)
                                            for i in inputs_of(x, plan.partition, split)]
        for what, kind, stage in shape_inputs:
            prod = compute.get((kind, stage, x.mb, x.it))
            if prod is None and kind in EITHER_BACKWARD:  # a plan may split some backwards only (DualPipeV)
                prod = compute.get((EITHER_BACKWARD[kind], stage, x.mb, x.it))
            if prod is None:
                producer = Action(kind, stage, x.mb, x.it)
                raise PlanError(f"GPU {gpu}: {x} reads the {what} of {producer}, which no lane runs")
            _route(idx, edges, prod, cons)


def _route(idx: _Index, edges: _Edges, prod: int, cons: int) -> None:
    """Route by GPU as well as by stage. W reads the state its I left on their one GPU (rpsim.ir.validate
    checks they share it): a direct edge, never a transfer. Matching W by (stage, mb, phase) found its
    I's ACT_IN (same key) and I's ACT_OUT, a cycle ACT_IN -> I -> ACT_OUT -> ACT_IN at the pcie level.
    Other data goes through the plan's SEND / RECV or ACT_OUT / ACT_IN when it has them."""
    (src, p), (dst, x) = idx.nodes[prod], idx.nodes[cons]
    if x.kind == "W" and src == dst:
        edges.add(prod, cons, "data")
        return
    ids = idx.ids
    phase = p.partition_phase
    send = ids.get((src, "SEND", p.stage, p.mb, p.it, phase, None, dst))
    recv = ids.get((dst, "RECV", p.stage, p.mb, p.it, phase, None, src))
    if send is not None and recv is not None:
        edges.add(prod, send, "data")
        edges.add(send, recv, "data")
        edges.add(recv, cons, "data")
        return
    out = ids.get((src, "ACT_OUT", p.stage, p.mb, p.it, phase, None, None))
    inn = ids.get((dst, "ACT_IN", x.stage, x.mb, x.it, x.partition_phase, None, None))
    if out is not None and inn is not None:
        edges.add(prod, out, "data")
        edges.add(out, inn, "data")
        edges.add(inn, cons, "data")
    else:
        edges.add_data(prod, cons, hop=src != dst)


def _window_edges(plan: Plan, idx: _Index, jobs: dict[int, list[Job]], edges: _Edges) -> None:
    for gpu, gpu_jobs in jobs.items():
        for k, job in enumerate(gpu_jobs):
            if k >= 2:
                old = gpu_jobs[k - 2]
                free = idx.find(gpu, "FREE", old.stage, old.first_mb, old.it, old.phase)
                a, b = plan.partition.ranges(job.phase)[job.stage]
                for layer in range(a, b):
                    load = idx.find(gpu, "LOAD", job.stage, job.first_mb, job.it, job.phase, chunk=layer)
                    if free is not None and load is not None:
                        edges.add(free, load, "window")
            acts = [a for a in job.actions if a.kind != "W"]  # W moves nothing: no window of its own
            for i in range(len(acts) - 2):
                early, late = acts[i], acts[i + 2]
                inn = idx.find(gpu, "ACT_IN", late.stage, late.mb, late.it, late.partition_phase)
                out = idx.find(gpu, "ACT_OUT", early.stage, early.mb, early.it, early.partition_phase)
                if inn is not None:
                    edges.add(idx.id_of(gpu, early), inn, "window")
                if out is not None:
                    edges.add(out, idx.id_of(gpu, late), "window")


def check_acyclic(plan: Plan) -> None:
    if dependency_facts(plan).acyclic:  # found out while building
        return
    import networkx as nx

    try:
        cycle = nx.find_cycle(dependency_graph(plan))
    except nx.NetworkXNoCycle:
        return
    nodes = [u for u, _v, *_ in cycle]
    raise PlanError("deadlock: the dependencies and lane orders form a cycle: "
                    + " -> ".join(f"gpu{gpu if gpu != CPU else '(cpu)'}:{a}" for gpu, a in nodes))
