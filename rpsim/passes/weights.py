"""Weights, gradients and the optimizer.

Resident (fixed placement, states fit): one GPU optimizer STEP per stage and iteration on the compute
lane after the stage's last backward (Megatron's layout). Streamed (RoundPipe, or PP + offload): per
job, one LOAD per layer on the param_h2d stream, a FREE after the job, one OFFLOAD per layer of a
backward job on the grad_d2h stream (one burst after the last microbatch, as the roundpipe library
does), and one CPU STEP per layer and iteration on the host's optimizer lane, deepest layer first
(gradients complete deep to shallow). RoundPipe's transfer engine issues a job's parameter chunks in
the windows of the previous job on that GPU, packed longest-processing-time first (Graham 1969) and
each issued after that window's activation upload; per-layer chunks stand in for its 256 MB pieces.
"""
from __future__ import annotations

from collections import defaultdict

from rpsim.costs import ModelCosts
from rpsim.ir import CPU, Action, LaneId, Plan
from rpsim.ir.action import BACKWARD_KINDS
from rpsim.ir.jobs import jobs_of, stages_are_resident

Lanes = dict[LaneId, tuple[Action, ...]]
Edge = tuple[tuple[int, Action], tuple[int, Action]]


def add_resident_steps(plan: Plan, lanes: Lanes) -> Lanes:
    out = dict(lanes)
    for gpu in range(plan.n_gpus):
        step_after = {job.actions[-1]: Action("STEP", job.stage, None, job.it, "F") for job in jobs_of(plan, gpu)}
        out[(gpu, "compute")] = insert_after(out[(gpu, "compute")], step_after)
    return out


def insert_after(actions: tuple[Action, ...], after: dict[Action, Action]) -> tuple[Action, ...]:
    """The lane with after[a] placed right behind each a that has one (one pass, no list.index)."""
    out: list[Action] = []
    for a in actions:
        out.append(a)
        if a in after:
            out.append(after[a])
    return tuple(out)


def lpt_windows(layer_bytes: dict[int, float], n_windows: int) -> list[list[int]]:
    """Longest processing time first: sort pieces by size, put each into the lightest window."""
    windows: list[list[int]] = [[] for _ in range(max(1, n_windows))]
    load = [0.0] * len(windows)
    for layer in sorted(layer_bytes, key=lambda k: (-layer_bytes[k], k)):
        w = min(range(len(windows)), key=lambda i: (load[i], i))
        windows[w].append(layer)
        load[w] += layer_bytes[layer]
    return windows


def add_weight_streaming(plan: Plan, lanes: Lanes, costs: ModelCosts) -> tuple[Lanes, tuple[Edge, ...]]:
    out = dict(lanes)
    edges: list[Edge] = []
    stateless = not stages_are_resident(plan)
    for gpu in range(plan.n_gpus):
        jobs = jobs_of(plan, gpu)
        uploads = set(out.get((gpu, "h2d"), ()))
        frees_after: dict[Action, Action] = {}  # a job's last compute action -> its FREE
        loads: list[Action] = []
        offloads: list[Action] = []
        for k, job in enumerate(jobs):
            a, b = plan.partition.ranges(job.phase)[job.stage]
            chunks = {layer: costs.layers[layer].weight_bytes for layer in range(a, b)}
            prev = jobs[k - 1] if (k and stateless) else None
            windows = lpt_windows(chunks, len(prev.actions) if prev else 1)
            for w, layers in enumerate(windows):
                for layer in layers:
                    load = Action("LOAD", job.stage, job.first_mb, job.it, job.phase, chunk=layer)
                    loads.append(load)
                    if prev is not None:
                        edges += _window_issue_edge(uploads, gpu, prev.actions[w], load)
            frees_after[job.actions[-1]] = Action("FREE", job.stage, job.first_mb, job.it, job.phase)
            if any(x.kind in BACKWARD_KINDS for x in job.actions):
                offloads += [Action("OFFLOAD", job.stage, job.first_mb, job.it, job.phase, chunk=layer)
                             for layer in range(b - 1, a - 1, -1)]
        out[(gpu, "compute")] = insert_after(out[(gpu, "compute")], frees_after)
        out[(gpu, "param_h2d")] = tuple(loads)
        out[(gpu, "grad_d2h")] = tuple(offloads)
    out[(CPU, "optimizer")] = _cpu_steps(plan)
    return out, tuple(edges)


def _window_issue_edge(uploads: set[Action], gpu: int, window_action: Action, load: Action) -> list[Edge]:
    """The chunk is issued after the activation upload of its window's microbatch, if there is one."""
    up = Action("ACT_IN", window_action.stage, window_action.mb, window_action.it, window_action.partition_phase)
    return [((gpu, up), (gpu, load))] if up in uploads else []


def _cpu_steps(plan: Plan) -> tuple[Action, ...]:
    steps: dict[int, list[Action]] = defaultdict(list)
    for it in range(plan.n_iters):
        for s, (a, b) in enumerate(plan.partition.bwd):
            for layer in range(a, b):
                steps[it].append(Action("STEP", s, None, it, "B", chunk=layer))
    return tuple(a for it in sorted(steps) for a in sorted(steps[it], key=lambda x: -x.chunk))  # type: ignore[operator]
