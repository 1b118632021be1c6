"""What each compute action reads, and who produced it: the logical data flow of a plan, before any
transfer is placed. Shared by the dependency graph and the lowering passes."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.ir.action import Action
from rpsim.ir.plan import Partition


@dataclass(frozen=True)
class Input:
    what: str  # act (forward input) | grad (gradient of the output) | saved (input kept for backward)
    producer: Action  # the compute action that produced it (F, B or FB; I stands in for B)


def inputs_of(a: Action, p: Partition, split_backward: bool = False) -> list[Input]:
    """Logical inputs of compute action `a` (same microbatch and iteration). With `split_backward` the
    gradient from the stage above is named as produced by I; a plan that splits only some backwards
    (DualPipeV) has B there instead, and consumers look for either."""
    m, it = a.mb, a.it
    bwd_kind = "I" if split_backward else "B"
    if a.kind == "F":
        return [Input("act", Action("F", a.stage - 1, m, it))] if a.stage else []  # type: ignore[operator]
    if a.kind == "FB":
        return [Input("act", Action("F", len(p.fwd) - 1, m, it))] if p.fwd else []
    if a.kind == "W":
        return [Input("saved", Action("I", a.stage, m, it))]
    # B or I over backward stage s: the gradient from the stage above, and the saved input at its start
    s = a.stage
    assert s is not None
    last = len(p.bwd) - 1
    out = []
    if s < last:
        above_kind = "FB" if (p.fused and s + 1 == last) else bwd_kind
        out.append(Input("grad", Action(above_kind, s + 1, m, it)))
    else:
        out.append(Input("grad", Action("F", len(p.fwd) - 1, m, it)))  # the loss, computed in the last F
    start = p.bwd[s][0]
    out.append(Input("saved", Action("F", p.stage_of_layer("F", start), m, it)))
    return _dedupe(out)


# The input gradient of (stage, mb) comes from its B, or from its I where that backward is split.
EITHER_BACKWARD = {"B": "I", "I": "B"}


def _dedupe(items: list[Input]) -> list[Input]:
    seen, out = set(), []
    for i in items:
        if i.producer not in seen:
            seen.add(i.producer)
            out.append(i)
    return out


def uses_split_backward(actions: list[Action]) -> bool:
    return any(a.kind in ("I", "W") for a in actions)


def saved_boundaries(partition: Partition, recompute: str, stateless: bool, lo: int, hi: int) -> tuple[int, ...]:
    """Boundaries strictly inside a forward over layers [lo, hi) whose activation it saves for backward,
    besides its own input at `lo`: every layer's input under layer-grain recompute; on stateless GPUs
    the inputs of the backward stages that start inside it (the backward partition may cut elsewhere);
    none on a stage's own GPU otherwise (stage recompute keeps only the stage input). The one rule the
    simulator's byte counts, the residency policy and the executor share."""
    if recompute == "layer":
        return tuple(range(lo + 1, hi))
    if not stateless:
        return ()
    return tuple(b for b, _ in partition.bwd if lo < b < hi)
