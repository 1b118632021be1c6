"""A RoundPipe plan's partition in the form the `roundpipe` library takes as a manual partition:
`RoundPipeRunConfig(execute_plan=ModelExecutePlan())` with `fwd_plan` and `bwd_plan` lists of layer
ranges (../shared/reference/roundpipe.md, the library's run-config documentation).

The library's layers are the modules of the `nn.Sequential` it wraps; rpsim's pipeline layers are the
same cut (0 = embedding, 1..L = decoder layers, L + 1 = LM head with the loss), so indices carry over.
Orders differ: `fwd_plan` lists forward stages shallow to deep, like rpsim's `partition.fwd`;
`bwd_plan` lists backward stages in execution order, deepest first, so it is rpsim's `partition.bwd`
reversed. With `forward_backward` the library runs `bwd_plan[0]` as the fused stage (forward and
backward together, no recompute), which must start where the forward plan ends: rpsim's fused
partition is exactly that, and a partition without a fused stage has no library equivalent.

File: {"format": "roundpipe-execute-plan", "version": 1, "n_layers", "fwd_plan": [[start, stop], ...],
"bwd_plan": [[start, stop], ...], "num_microbatch", "source": {...}}, ranges half-open."""
from __future__ import annotations

from typing import Any

from rpsim.errors import PlanError
from rpsim.ir import Plan
from rpsim.ir.plan import Partition

FORMAT = "roundpipe-execute-plan"
VERSION = 1


def library_plan(plan: Plan) -> dict[str, Any]:
    """The library's execute plan for a RoundPipe plan (PlanError if it has no fused last stage)."""
    p = plan.partition
    if not p.fused:
        raise PlanError(f"--library-plan: the plan's partition has no fused last stage (schedule "
                        f"{plan.schedule!r}); the roundpipe library's forward_backward always fuses the "
                        f"deepest backward stage, so only fused RoundPipe partitions can be exported")
    model = (plan.setup.get("model") or {}).get("name")
    return {"format": FORMAT, "version": VERSION, "n_layers": p.n_layers,
            "fwd_plan": [list(r) for r in p.fwd], "bwd_plan": [list(r) for r in reversed(p.bwd)],
            "num_microbatch": plan.n_mb,
            "source": {"schedule": plan.schedule, "model": model, "n_gpus": plan.n_gpus,
                       "recompute": plan.recompute}}


def partition_from_library_plan(doc: dict[str, Any]) -> Partition:
    """Inverse of library_plan's ranges, checked as the library checks a fused plan: forward stages
    cover [0, f) in order, backward stages (deepest first) cover [0, n_layers), and the first backward
    stage starts at f."""
    if doc.get("format") != FORMAT:
        raise PlanError(f"library plan: format {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise PlanError(f"library plan: version {doc.get('version')!r}, expected {VERSION}")
    try:
        fwd = tuple((int(a), int(b)) for a, b in doc["fwd_plan"])
        bwd = tuple((int(a), int(b)) for a, b in reversed(doc["bwd_plan"]))
    except (KeyError, TypeError, ValueError) as e:
        raise PlanError(f"library plan: fwd_plan / bwd_plan must be lists of [start, stop] ({e})") from None
    partition = Partition(fwd=fwd, bwd=bwd, fused=True)  # checks the covers
    if partition.n_layers != doc.get("n_layers"):
        raise PlanError(f"library plan: ranges cover {partition.n_layers} layers, n_layers says {doc.get('n_layers')}")
    return partition
