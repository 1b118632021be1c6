"""e02's figure: RoundPipe, its sync variant and the baselines against the paper's measured RoundPipe,
tokens/s per model as grouped bars on a log axis."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def throughput_figure(rows: list[dict], paper_tokens_per_s: dict[str, float], title: str, path: Path) -> Figure:
    """Grouped bars per model on a log axis labelled at 1-2-5 steps in plain tokens/s; the legend below
    the axes, clear of the bars."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from rpsim.plot.style import PAGE_IN, paper_rc
    models = list(dict.fromkeys(r["model"] for r in rows))
    systems = list(dict.fromkeys(r["system"] for r in rows))
    width = 0.8 / (len(systems) + 1)
    with rc_context(paper_rc()):
        fig = Figure(figsize=(PAGE_IN, 2.8), layout="constrained")
        ax = fig.subplots()
        for k, system in enumerate(systems):
            mine = {r["model"]: r for r in rows if r["system"] == system}
            xs = [i + k * width for i in range(len(models))]
            bars = ax.bar(xs, [mine[m]["tokens_per_s"] for m in models], width, color=f"C{k}")
            for bar, m in zip(bars, models, strict=True):
                if not mine[m]["feasible"]:  # out of memory at the paper's microbatch: hatched
                    bar.set_hatch("//")
                    bar.set_alpha(0.45)
        paper = [(i + len(systems) * width, paper_tokens_per_s[m]) for i, m in enumerate(models)
                 if m in paper_tokens_per_s]  # the paper gives no figure for some models: no bar
        ax.bar([x for x, _ in paper], [v for _, v in paper], width, color="k")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))], models)
        handles = [Patch(color=f"C{k}", label=system) for k, system in enumerate(systems)]
        handles += [Patch(color="k", label="paper RoundPipe (measured)"),
                    Patch(facecolor="white", edgecolor="0.4", hatch="//", label="out of GPU memory")]
        ax.set_yscale("log")
        # Labels at 1, 2 and 5 of each decade, written out (20,000 rather than 2x10^4).
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
        ax.set_ylabel("tokens/s (log scale)")
        fig.suptitle(title)
        fig.legend(handles=handles, loc="outside lower center", ncol=3)
        fig.savefig(path)
    return fig
