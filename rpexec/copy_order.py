"""Issue order of one direction's copies on a GPU: an activation copy goes before the parameter and
gradient copies that the same compute action makes ready.

Why: a GPU's copy engine runs the copies of one direction one after another, in the order they were
issued, whatever their streams' priorities (CUDA orders kernels by stream priority, not copies). rpsim
gives activation transfers the link before parameter and gradient traffic (RoundPipe's transfer engine;
`rpsim.sim.topology.TRANSFER_PRIORITY`), and rpexec's lane threads each issue as soon as their
dependencies are issued, so after a backward its gradient OFFLOADs and its ACT_OUT raced for the engine.
In session 14's one-H200 RoundPipe runs no two copies of one direction ever overlapped, and 40-55% of
the backwards' ACT_OUTs ran after every OFFLOAD of their backward: the next stage's backward, which waits
for that activation gradient to come back, started 7.8 ms later each time (llama-1.8b RoundPipe-sync, 10.9
ms between backwards against rpsim's 3.1; `benchmarks/copy_order_ab.py` measures it). The edge
ACT_OUT -> OFFLOAD (`why="copy_order"`) makes the download's lane issue after the activation's, and its
stream wait for the activation copy's end, so the engine serves them in rpsim's order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rpsim.ir import Action
from rpsim.ir.action import COMPUTE_KINDS
from rpsim.sim.topology import TRANSFER_PRIORITY

if TYPE_CHECKING:
    import networkx as nx

Node = tuple[int, Action]
COPY_DIRECTION = {"ACT_OUT": "d2h", "OFFLOAD": "d2h", "ACT_IN": "h2d", "LOAD": "h2d"}
COPY_ORDERS = ("activations-first", "as-issued")  # rpexec run --copy-order


def copy_order_edges(graph: nx.DiGraph) -> list[tuple[Node, Node]]:
    """(first, then) pairs: for every compute action, each higher-priority copy it makes ready on its GPU
    before each lower-priority copy of the same direction it makes ready."""
    edges = []
    for node in graph.nodes:
        gpu, a = node
        if a.kind not in COMPUTE_KINDS:
            continue
        copies = [s for s in graph.successors(node) if s[0] == gpu and s[1].kind in COPY_DIRECTION]
        for first in copies:
            for then in copies:
                if (COPY_DIRECTION[first[1].kind] == COPY_DIRECTION[then[1].kind]
                        and TRANSFER_PRIORITY[first[1].kind] < TRANSFER_PRIORITY[then[1].kind]):
                    edges.append((first, then))
    return edges


def with_copy_order(graph: nx.DiGraph) -> nx.DiGraph:
    """`graph` with the copy-order edges added (in place, and returned). An edge that would close a cycle
    (the lower-priority copy already leads to the activation copy) is left out: the plan's order wins."""
    import networkx as nx
    edges = [e for e in copy_order_edges(graph) if not graph.has_edge(*e)]
    graph.add_edges_from(edges, why="copy_order")
    if not nx.is_directed_acyclic_graph(graph):
        for first, then in edges:
            graph.remove_edge(first, then)
            if not nx.has_path(graph, then, first):
                graph.add_edge(first, then, why="copy_order")
    return graph
