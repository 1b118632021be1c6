"""The comparison figure of `rpsim compare --plot`: each schedule's compute lanes (one row per GPU) one
above another on a shared time axis, then bars of iteration time split into compute and the bubble
parts (fill, drain, switch, intra). Infeasible schedules carry their reason; schedules that could not
be built are listed at the bottom."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from rpsim.compare import Row
from rpsim.plot.gantt import draw_rows, set_row_ticks
from rpsim.plot.labels import LABEL_KEY
from rpsim.plot.rows import lane_rows, rows_extent
from rpsim.plot.save import figure_format, save_figure
from rpsim.plot.style import FONT_PT, IDLE_COLOUR, fmt_time, kind_colour, kind_label, kind_order, time_unit
from rpsim.plot.titles import device_title, model_title
from rpsim.plot.view import trace_view
from rpsim.scenario import Scenario

WIDTH_IN, LEFT_IN, RIGHT_IN = 12.6, 1.25, 0.6
TOP_IN, BOTTOM_IN = 0.8, 0.65
GPU_ROW_IN, PANEL_GAP_IN, BAR_IN = 0.17, 0.5, 0.36
# Bar colours apart from the Gantt's kind colours, so a bubble part is never read as an action kind.
BUBBLE_PARTS = (("compute", "#6b7b8c"), ("fill", "#f1ce63"), ("drain", "#f28e2b"), ("switch", "#a0cbe8"),
                ("intra", "#d4a6c8"))
RED = "#c0392b"


def compare_figure(rows: list[Row], sc: Scenario) -> Figure:
    built = [r for r in rows if r.result is not None]
    not_built = [r for r in rows if r.result is None]
    panels = [lane_rows(r.result.trace, lanes=("compute",)) for r in built]  # type: ignore[union-attr]
    heights = [rows_extent(p) * GPU_ROW_IN for p in panels]
    bars_in = max(1, len(built)) * BAR_IN + 0.4
    notes_in = 0.22 * len(not_built)
    height = TOP_IN + sum(h + PANEL_GAP_IN for h in heights) + 0.9 + bars_in + BOTTOM_IN + notes_in
    fig = Figure(figsize=(WIDTH_IN, height), dpi=100)
    plot_w = WIDTH_IN - LEFT_IN - RIGHT_IN
    makespan = max((r.result.trace.makespan_s for r in built), default=1.0)  # type: ignore[union-attr]
    unit, scale = time_unit(makespan)
    top, first = height - TOP_IN, None
    for row, lanes, h in zip(built, panels, heights, strict=True):
        top -= PANEL_GAP_IN + h
        ax = fig.add_axes((LEFT_IN / WIDTH_IN, top / height, plot_w / WIDTH_IN, h / height), sharex=first)
        first = first or ax
        draw_panel(ax, row, lanes, scale, plot_w * 72 / (makespan * scale))
        ax.set_xlim(0, makespan * scale)
        ax.tick_params(axis="x", labelbottom=False)
    if first is not None:
        ax.tick_params(axis="x", labelbottom=True)
        ax.set_xlabel(f"time ({unit}); compute lanes only; dashed line \"it i\": end of iteration i (panels "
                      "draw different numbers of iterations)", fontsize=FONT_PT["label"])
    bar_ax = fig.add_axes((LEFT_IN / WIDTH_IN, (BOTTOM_IN + notes_in) / height, plot_w / WIDTH_IN,
                           bars_in / height))
    draw_iteration_bars(bar_ax, built)
    for i, r in enumerate(not_built):
        fig.text(LEFT_IN / WIDTH_IN, (0.1 + 0.22 * (len(not_built) - 1 - i)) / height,
                 f"not built: {r.metrics['schedule']} - {r.metrics['reason']}", fontsize=8, color=RED)
    t = sc.training
    fig.suptitle(f"{model_title(sc.model)} on {device_title(sc.server)} ({sc.server.name}): "
                 f"{t.n_mb} microbatches x {t.mb_size}, seq {t.seq_len}, {t.mode}", x=LEFT_IN / WIDTH_IN,
                 y=1 - 0.08 / height, ha="left", fontsize=FONT_PT["title"] + 2)
    add_legend(fig, built, 1 - 0.3 / height)
    fig.text(LEFT_IN / WIDTH_IN, 1 - 0.56 / height, LABEL_KEY, fontsize=FONT_PT["note"], color="#444444",
             va="top")
    return fig


def draw_panel(ax: Axes, row: Row, lanes: list, scale: float, pt_per_unit: float) -> None:
    res, m = row.result, row.metrics
    assert res is not None
    view = trace_view(res.trace, res.plan, m)
    draw_rows(ax, lanes, scale, pt_per_unit, panel=m["schedule"], idle_span=(0.0, res.trace.makespan_s))
    for end in view.iteration_ends_s:
        ax.axvline(end * scale, color="#222222", linestyle="--", linewidth=0.8, zorder=4)
    ax.set_ylim(rows_extent(lanes), 0)
    set_row_ticks(ax, lanes, with_lane=False)
    for tick in ax.get_yticklabels():
        tick.set_fontsize(6.5)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    # Schedules draw different numbers of iterations (async RoundPipe needs several for its steady
    # state), so each panel says how many it draws and labels where each one ends.
    n_drawn = len(view.iteration_ends_s)
    head = f"{m['schedule']}: {fmt_time(m['iteration_s'])} per iteration" + \
        (" (steady state)" if m.get("steady_state") else "") + f", bubble {100 * m['bubble']:.1f}%; " + \
        f"{n_drawn} iteration{'s' if n_drawn != 1 else ''} drawn"
    ax.set_title(head, loc="left", fontsize=FONT_PT["title"], fontweight="bold", pad=3)
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for i, end in enumerate(view.iteration_ends_s):
        ax.text(end * scale, -0.01, f"it {i} ", transform=top, ha="right", va="top", fontsize=FONT_PT["note"],
                color="#222222")
    if not m["feasible"]:
        ax.set_title(f"infeasible: {m['reason']}", loc="right", fontsize=FONT_PT["label"], color=RED, pad=3)


def draw_iteration_bars(ax: Axes, built: list[Row]) -> None:
    names = [r.metrics["schedule"] for r in built]
    longest = max((r.metrics["iteration_s"] for r in built), default=1.0)
    unit, scale = time_unit(longest)
    for y, r in enumerate(built):
        m = r.metrics
        parts = [1 - m["bubble"], m["bubble_fill"], m["bubble_drain"], m["bubble_switch"], m["bubble_intra"]]
        left = 0.0
        for (_, colour), frac in zip(BUBBLE_PARTS, parts, strict=True):
            w = frac * m["iteration_s"] * scale
            ax.barh(y, w, left=left, color=colour, height=0.62, edgecolor="white", linewidth=0.3)
            left += w
        note = f" {fmt_time(m['iteration_s'])}, bubble {100 * m['bubble']:.1f}%" + \
            ("" if m["feasible"] else " - infeasible")
        ax.text(left, y, note, va="center", fontsize=8, color="black" if m["feasible"] else RED)
    ax.set_yticks(range(len(built)), names, fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), built, strict=True):
        tick.set_color("black" if r.metrics["feasible"] else RED)
    ax.legend(handles=[Patch(facecolor=c, label=n) for n, c in BUBBLE_PARTS], loc="lower right", fontsize=7.5,
              frameon=False, ncol=len(BUBBLE_PARTS), bbox_to_anchor=(1.0, 1.0), handlelength=1.4)
    ax.set_ylim(len(built) - 0.5, -0.5)
    ax.set_xlim(0, longest * scale * 1.28)
    ax.set_xlabel(f"time per iteration ({unit}): compute share and bubble parts (fractions of GPU time)",
                  fontsize=8)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def add_legend(fig: Figure, built: list[Row], y: float) -> None:
    kinds = sorted({e.kind for r in built for e in r.result.trace.events  # type: ignore[union-attr]
                    if e.lane == "compute" and e.kind != "FREE"}, key=kind_order)
    handles: list[Any] = [Patch(facecolor=kind_colour(k), label=kind_label(k)) for k in kinds]
    handles.append(Patch(facecolor=IDLE_COLOUR, label="idle (bubble)"))
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(LEFT_IN / WIDTH_IN, y), ncol=len(handles),
               fontsize=7.5, frameon=False, handlelength=1.4, columnspacing=1.0)


def save_compare_figure(rows: list[Row], sc: Scenario, path: str | Path) -> None:
    figure_format(path)  # refuse a bad extension before drawing
    save_figure(compare_figure(rows, sc), path)
