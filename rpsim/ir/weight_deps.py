"""The weight rule of rpsim.ir.deps: when a layer's weights may be loaded and its gradient downloaded and
stepped (see that module's doc, "weights"), including the plan option grad_fence."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rpsim.ir.action import WEIGHT_GRAD_KINDS
from rpsim.ir.jobs import Job

if TYPE_CHECKING:
    from rpsim.ir.deps import _Edges, _Index
    from rpsim.ir.plan import Plan

# What a layer's gradient download waits for; a plan without the option is fenced at the download
# ("offload"), the rule's meaning before the option existed, so older plan files keep their dependencies.
GRAD_FENCES = ("none", "offload", "backward")
UNSET_GRAD_FENCE = "offload"


def grad_fence_of(options: Mapping[str, Any]) -> str:
    """A plan's gradient fence, from its options (absent: the download fence older plans were timed with)."""
    return options.get("grad_fence", UNSET_GRAD_FENCE)


def weight_edges(plan: Plan, idx: _Index, jobs: dict[int, list[Job]], edges: _Edges) -> None:
    lag = 1 if plan.optimizer == "sync" else 2
    has_steps = any(lane == "optimizer" or any(a.kind == "STEP" for a in acts)
                    for (_, lane), acts in plan.lanes.items())
    offloads_of: dict[tuple[int, int], list[int]] = defaultdict(list)
    fence = grad_fence_of(plan.options)
    for gpu, gpu_jobs in jobs.items():
        for job in gpu_jobs:
            a, b = plan.partition.ranges(job.phase)[job.stage]
            key = (job.stage, job.first_mb, job.it, job.phase)
            for layer in range(a, b):
                load = idx.find(gpu, "LOAD", *key, chunk=layer)
                if load is not None:
                    edges.add(load, idx.id_of(gpu, job.actions[0]), "weights")
                    step = idx.steps.get((layer, job.it - lag))
                    if step is not None:
                        edges.add(step, load, "weights")
                off = idx.find(gpu, "OFFLOAD", *key, chunk=layer)
                if off is not None:
                    edges.add(idx.id_of(gpu, job.actions[-1]), off, "weights")
                    offloads_of[(layer, job.it)].append(off)
                    if fence == "backward":
                        # The library's backward job waits for its layers' gradient copy of the previous
                        # iteration, which its optimizer thread makes at the start of that step, once the
                        # step before it is done: approximated by the end of STEP(it - 2).
                        prev = idx.steps.get((layer, job.it - 2))
                        if prev is not None:
                            edges.add(prev, idx.id_of(gpu, job.actions[0]), "weights")
                    elif fence == "offload":  # the download reuses the host buffer the previous STEP reads
                        prev = idx.steps.get((layer, job.it - 1))
                        if prev is not None:
                            edges.add(prev, off, "weights")
    for (layer, it), nodes in offloads_of.items():
        step = idx.steps.get((layer, it))
        for n in nodes:
            if step is not None:
                edges.add(n, step, "weights")
    if not has_steps:
        version_edges(plan, idx, jobs, lag, edges)


def version_edges(plan: Plan, idx: _Index, jobs: dict[int, list[Job]], lag: int, edges: _Edges) -> None:
    """Compute-only plans: the first forward of each job waits for the weights it reads to be updated."""
    backward_by: dict[tuple[int, int], list[int]] = defaultdict(list)  # (bwd stage, it) -> nodes
    for gpu, a in plan.compute_actions():
        if a.kind in WEIGHT_GRAD_KINDS:
            backward_by[(a.stage, a.it)].append(idx.id_of(gpu, a))  # type: ignore[index]
    for gpu, gpu_jobs in jobs.items():
        for job in gpu_jobs:
            first = job.actions[0]
            if first.kind not in ("F", "FB") or job.it - lag < 0:
                continue
            lo, hi = plan.partition.ranges(first.partition_phase)[first.stage]  # type: ignore[index]
            for s, (a, b) in enumerate(plan.partition.bwd):
                if a < hi and lo < b:
                    for node in backward_by[(s, job.it - lag)]:
                        edges.add(node, idx.id_of(gpu, first), "weights")
