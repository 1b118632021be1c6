"""Text grid of a plan's lanes (torch pipelining's `_format_pipeline_order` habit), with an optional
`<-- ERROR HERE` mark on one action, for error messages and `rpsim export --show`."""
from __future__ import annotations

from collections.abc import Iterable

from rpsim.ir.action import Action
from rpsim.ir.plan import CPU, Plan


def format_lanes(plan: Plan, gpus: Iterable[int] | None = None, mark: tuple[int, Action] | None = None,
                 max_actions: int = 40) -> str:
    wanted = set(range(plan.n_gpus)) | {CPU} if gpus is None else set(gpus)
    lines = []
    for (gpu, lane), actions in sorted(plan.lanes.items()):
        if gpu not in wanted or not actions:
            continue
        name = "cpu" if gpu == CPU else f"gpu{gpu}"
        shown = list(actions)
        cut = ""
        if mark is not None and mark[0] == gpu and mark[1] in shown:
            i = shown.index(mark[1])
            lo = max(0, i - max_actions // 2)
            shown = shown[lo:lo + max_actions]
            cut = f" (from #{lo})" if lo else ""
        elif len(shown) > max_actions:
            shown, cut = shown[:max_actions], f" ... (+{len(actions) - max_actions})"
        cells = [f"[{a}]<-- ERROR HERE" if mark == (gpu, a) else str(a) for a in shown]
        lines.append(f"{name:>5}/{lane:<9} {' '.join(cells)}{cut}")
    return "\n".join(lines)
