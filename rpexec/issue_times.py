"""When rpexec's lane threads *issue* each action, given rpsim's predicted GPU timeline of the plan.

Why it matters: a pooled host buffer is taken when its copy is issued (transfers._to_host), not when the
copy engine starts it, and lane threads run ahead of their GPU, so pools sized from the GPU timeline
alone come up short (2.8B on 2x H200: 59 buffers predicted from the GPU timeline, 71 at the end of the
run; from the issue times 67). A pool that outgrows its presizing pins new slabs inside the run
(rpexec.host_arena keeps one ready). Session 10 suspected that pinning of a steady-iteration stall; session
11 measured the stall still there with these pools, so it was not the cause (benchmarks/notes-rpexec.md).

The rule is the interpreter's (rpexec.runtime): a lane thread issues its actions in order; before each it
waits on the host until every dependency has been issued, and until a dependency has *finished* where it
synchronises on it (the optimizer lane waits for its downloads; a transfer lane waits for the end of the
action that opens its memory window); a host action (the CPU STEP) counts as issued when it has run.
Issuing a CUDA action takes no time, and nothing is issued after the GPU started it, so an action's
issue time is the latest of those waits, capped by its predicted start."""
from __future__ import annotations

from typing import Any

from rpexec.copy_order import with_copy_order
from rpsim.ir import CPU, Action, Plan
from rpsim.ir.deps import dependency_graph

Node = tuple[int, Action]


def host_waits_for_end(node: Node, lane: str, why: str) -> bool:
    """Whether the lane thread of `node` waits on the host for the *end* of a dependency over an edge
    of kind `why`, rather than only for its issue: the interpreter's rule (rpexec.runtime
    Interpreter._device_wait calls this), replayed here on a predicted trace."""
    return node[0] == CPU or (lane != "compute" and why == "window")


def issue_times_s(plan: Plan, trace: Any) -> dict[Node, float]:
    """Each action's issue time (seconds from the trace's start) under rpexec's lane threads, for the
    predicted `trace` of `plan` (rpsim.sim.trace.Trace). Actions missing from the trace are issued as
    soon as their waits allow."""
    import networkx as nx

    graph = with_copy_order(dependency_graph(plan))  # the interpreter's graph (rpexec.session.run_plan)
    events = {(e.gpu, e.action): e for e in trace.events}
    lane_of = {(gpu, a): lane for (gpu, lane), actions in plan.lanes.items() for a in actions}
    issued: dict[Node, float] = {}
    ended: dict[Node, float] = {}
    for node in nx.topological_sort(graph):
        e = events.get((node[0], str(node[1])))
        t = 0.0
        for p, edge in graph.pred[node].items():
            why = edge.get("why", "")
            if why != "lane" and host_waits_for_end(node, lane_of.get(node, ""), why):
                t = max(t, ended[p])
            else:
                t = max(t, issued[p])
        if e is not None:
            t = min(t, e.start_s)
        ended[node] = e.end_s if e is not None else t
        # the optimizer lane runs its STEP itself: the thread moves on, and others see it, when it is done
        issued[node] = ended[node] if node[0] == CPU else t
    return issued
