"""The bubble chart of one trace, simulated or measured: a Gantt row per lane with events, grouped by
GPU (the host's optimizer last), coloured by action kind, idle time as grey gaps, the bubble per GPU
at its compute row, and a dashed line at the end of each iteration."""
from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from rpsim.ir import Plan
from rpsim.plot.gantt import draw_rows, set_row_ticks
from rpsim.plot.labels import LABEL_KEY
from rpsim.plot.rows import lane_rows, rows_extent
from rpsim.plot.style import FONT_PT, IDLE_COLOUR, fmt_time, kind_colour, kind_label, kind_order, time_unit
from rpsim.plot.titles import device_title, model_title
from rpsim.plot.view import TraceView, trace_view
from rpsim.scenario import Scenario
from rpsim.sim.trace import Trace

ROW_IN = 0.3  # inches per unit of row height: a compute row is 0.3 in, a transfer row half that
LEFT_IN, RIGHT_IN, TOP_IN, BOTTOM_IN = 1.15, 0.95, 1.15, 1.15


def bubble_figure(trace: Trace, plan: Plan | None = None, metrics: dict[str, Any] | None = None,
                  width_in: float = 14.0, sc: Scenario | None = None) -> Figure:
    """`sc`, where known, gives the title the model's published name and the GPUs' product name."""
    view = trace_view(trace, plan, metrics)
    rows = lane_rows(trace)
    extent = rows_extent(rows)
    height_in = TOP_IN + extent * ROW_IN + BOTTOM_IN
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    plot_w = width_in - LEFT_IN - RIGHT_IN
    ax = fig.add_axes((LEFT_IN / width_in, BOTTOM_IN / height_in, plot_w / width_in,
                       extent * ROW_IN / height_in))
    unit, scale = time_unit(trace.makespan_s)
    x_hi = max(trace.makespan_s * scale, 1e-9) * 1.01  # room for the last iteration's line
    ax.set_xlim(0, x_hi)
    ax.set_ylim(extent, 0)
    draw_rows(ax, rows, scale, plot_w * 72 / x_hi, idle_span=(0.0, trace.makespan_s))
    set_row_ticks(ax, rows)
    ax.set_xlabel(f"time ({unit})")
    ax.grid(axis="x", color="#d0d0d0", linewidth=0.5, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    mark_iterations(ax, view, scale)
    write_gpu_bubbles(ax, rows, view)
    fig.suptitle(title(trace, view, sc), x=LEFT_IN / width_in, ha="left", y=1 - 0.12 / height_in,
                 fontsize=FONT_PT["title"] + 2)
    fig.text(LEFT_IN / width_in, 1 - 0.42 / height_in, subtitle(trace, view, scale, unit), fontsize=FONT_PT["label"],
             color="#444444", va="top")
    fig.text(LEFT_IN / width_in, 1 - 0.62 / height_in, LABEL_KEY, fontsize=FONT_PT["note"], color="#444444", va="top")
    add_legend(fig, sorted({e.kind for r in rows for e in r.events}, key=kind_order), 0.05 / height_in)
    return fig


def mark_iterations(ax: Any, view: TraceView, scale: float) -> None:
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for i, end in enumerate(view.iteration_ends_s):
        ax.axvline(end * scale, color="#222222", linestyle="--", linewidth=0.9, zorder=4)
        ax.text(end * scale, 1.003, f"end of it {i}", transform=top, ha="right", va="bottom", fontsize=FONT_PT["note"],
                color="#222222", zorder=5)
    if view.steady:  # the bubble %s hold for this window only: show it, above the iteration labels
        ax.annotate("", xy=(view.lo_s * scale, 1.03), xytext=(view.hi_s * scale, 1.03), xycoords=top,
                    arrowprops={"arrowstyle": "<->", "color": "#2a6f3f", "linewidth": 1.0})
        ax.text((view.lo_s + view.hi_s) / 2 * scale, 1.034,
                "steady-state window (bubble % and iteration time)", transform=top, ha="center", va="bottom",
                fontsize=FONT_PT["note"], color="#2a6f3f")


def write_gpu_bubbles(ax: Any, rows: list, view: TraceView) -> None:
    across = blended_transform_factory(ax.transAxes, ax.transData)
    for r in rows:
        if r.lane == "compute" and 0 <= r.gpu < len(view.gpu_bubble):
            ax.text(1.008, r.centre, f"bubble {100 * view.gpu_bubble[r.gpu]:.1f}%", transform=across,
                    ha="left", va="center", fontsize=FONT_PT["tick"], fontweight="bold")


def title(trace: Trace, view: TraceView, sc: Scenario | None = None) -> str:
    m = trace.meta
    what = " ".join(str(m[k]) for k in ("schedule",) if m.get(k)) or "trace"
    if sc is not None:
        where = f"{model_title(sc.model)} on {device_title(sc.server)} ({sc.server.name})"
    else:
        where = " on ".join(str(m[k]) for k in ("model", "server") if m.get(k))
        if m.get("gpu_name") and m.get("gpu_name") != "cpu":  # a measured trace names its GPUs
            where += f" ({m.get('n_gpus', '')}x {m['gpu_name']})".replace(" (x ", " (")
    measured = "" if m.get("source", "rpsim") == "rpsim" else f" (measured by {m['source']})"
    steady = ", steady state" if view.steady else ""
    return (f"{what}{measured}: {where} - iteration {fmt_time(view.iteration_s)}{steady}, "
            f"bubble {100 * view.bubble:.1f}%")


def subtitle(trace: Trace, view: TraceView, scale: float, unit: str) -> str:
    level = f"fidelity {trace.meta['level']}; " if trace.meta.get("level") else ""
    window = "steady-state window" if view.steady else "window"
    return (f"{level}{len(view.iteration_ends_s)} iteration(s); bubble % per GPU = idle compute time in the "
            f"{window} [{view.lo_s * scale:.4g}, {view.hi_s * scale:.4g}] {unit}; grey = idle")


def add_legend(fig: Figure, kinds: list[str], bottom: float) -> None:
    handles: list[Any] = [Patch(facecolor=kind_colour(k), label=kind_label(k)) for k in kinds]
    handles += [Patch(facecolor=IDLE_COLOUR, label="idle (bubble)"),
                Line2D([], [], color="#222222", linestyle="--", linewidth=0.9, label="end of an iteration")]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, bottom), ncol=min(6, len(handles)),
               fontsize=FONT_PT["label"], frameon=False)
