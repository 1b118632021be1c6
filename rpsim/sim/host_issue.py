"""Host time to issue a compute action's kernels, and the interpreter its lanes share.

An eager executor issues every kernel from a host thread; rpexec runs one Python thread per lane, so all
GPUs' compute lanes take turns in one interpreter (the GIL). A compute action's kernels cannot finish
before the host has issued them: it lasts max(device time, host time). The host time is the measured
cost of issuing each of its layers (HostSpec.issue_s, from `rpexec calibrate`): the Python part of a
forward runs on the shared interpreter, whose capacity is one second of work per second, divided max-min
among the lanes issuing at once (rpsim.sim.sharing); the rest of a backward runs in autograd's native
engine, one per device, without the interpreter. Small layers are issue-bound this way: a 0.7B-parameter
model's forward stages measured 1.4-1.9x their device time on 1-2 H200s (e03), against 1.1-1.2x for
backward stages.
"""
from __future__ import annotations

from rpsim.ir import Action
from rpsim.ir.action import COMPUTE_KINDS

INTERPRETER = "host.interpreter"  # capacity 1.0: seconds of issue work per second


def layer_kind_index(layer: int, n_pipeline_layers: int) -> int:
    """0 embedding, 1 transformer layer, 2 head: the rows of HostSpec.issue_s."""
    return 0 if layer == 0 else 2 if layer == n_pipeline_layers - 1 else 1


def host_issue_s(issue: tuple[tuple[float, float, float], ...], lo: int, hi: int, n_pipeline_layers: int,
                 kind: str, recompute: bool) -> tuple[float, float]:
    """(seconds on the shared interpreter, seconds in the device's own autograd engine) to issue the
    action `kind` over pipeline layers [lo, hi). A recomputing B re-runs the forward with autograd before
    the backward; without recomputation F builds the graph (forward with autograd) and B only
    backpropagates. I and W split B's host work as they split its device work: half each, the
    interpreter's share with I."""
    shared = engine = 0.0
    for layer in range(lo, hi):
        forward, forward_grad, forward_backward = issue[layer_kind_index(layer, n_pipeline_layers)]
        backward = max(forward_backward - forward_grad, 0.0)
        if kind == "F":
            shared += forward if recompute else forward_grad
        elif kind == "FB":
            shared += forward_grad
            engine += backward
        elif kind in ("B", "I", "W"):
            shared += forward_grad if recompute else 0.0
            engine += backward
    if kind == "I":
        return shared, engine / 2
    if kind == "W":
        return 0.0, engine / 2
    return shared, engine


def is_compute(a: Action) -> bool:
    return a.kind in COMPUTE_KINDS
