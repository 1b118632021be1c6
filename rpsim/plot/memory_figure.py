"""Memory over time: one small panel per GPU (in use x the allocator overhead, as feasibility judges it)
and one for the host (raw), each with its capacity line; a panel whose peak crosses capacity is red."""
from __future__ import annotations

import math

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rpsim.ir import CPU
from rpsim.plot.style import FONT_PT, fmt_time, time_unit
from rpsim.plot.titles import device_title, model_title
from rpsim.scenario import Scenario
from rpsim.sim.memory import ALLOCATOR_OVERHEAD
from rpsim.sim.simulate import SimResult
from rpsim.units import GiB

NCOLS = 3
PANEL_W_IN, PANEL_H_IN = 4.6, 2.0
OVER = "#c0392b"


def memory_figure(result: SimResult, sc: Scenario) -> Figure:
    n = result.plan.n_gpus
    nrows = math.ceil((n + 1) / NCOLS)
    fig = Figure(figsize=(NCOLS * PANEL_W_IN, nrows * PANEL_H_IN + 0.9), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, NCOLS, sharex=True, squeeze=False).ravel()
    makespan = result.trace.makespan_s
    unit, scale = time_unit(makespan)
    gpu_axes = list(axes[:n])
    for g, ax in enumerate(gpu_axes):
        draw_device(ax, result.memory.steps.get(g, []), ALLOCATOR_OVERHEAD, sc.server.gpu.memory_bytes,
                    makespan, scale, f"GPU {g}")
        if g > 0:
            ax.sharey(gpu_axes[0])
    draw_device(axes[n], result.memory.steps.get(CPU, []), 1.0, sc.server.host.dram_bytes, makespan, scale,
                "host")
    for ax in axes[n + 1:]:
        ax.set_visible(False)
    for ax in axes[(nrows - 1) * NCOLS:]:
        ax.set_xlabel(f"time ({unit})")
    for ax in axes[::NCOLS]:
        ax.set_ylabel("GiB")
    m = result.trace.meta
    fig.suptitle(f"memory: {m.get('schedule', '')} on {model_title(sc.model)}, {device_title(sc.server)} "
                 f"({sc.server.name}) - {fmt_time(makespan)} traced; GPU lines include x{ALLOCATOR_OVERHEAD} "
                 "allocator overhead", fontsize=FONT_PT["title"] + 1)
    return fig


def draw_device(ax: Axes, steps: list[tuple[float, float]], factor: float, capacity_bytes: float,
                makespan_s: float, scale: float, name: str) -> None:
    xs = [0.0] + [t * scale for t, _ in steps] + [makespan_s * scale]
    ys = [0.0] + [b * factor / GiB for _, b in steps]
    ys.append(ys[-1])
    peak = max(ys)
    over = peak * GiB > capacity_bytes
    ax.plot(xs, ys, drawstyle="steps-post", color=OVER if over else "#4e79a7", linewidth=0.9)
    ax.fill_between(xs, ys, step="post", color=OVER if over else "#4e79a7", alpha=0.15, linewidth=0)
    ax.axhline(capacity_bytes / GiB, color=OVER, linestyle="--", linewidth=1.0)
    ax.text(0.01, capacity_bytes / GiB, f" capacity {capacity_bytes / GiB:.0f} GiB", color=OVER, fontsize=FONT_PT["note"],
            va="bottom", ha="left", transform=ax.get_yaxis_transform())
    ax.set_title(f"{name}: peak {peak:.1f} GiB" + (" - over capacity" if over else ""), fontsize=FONT_PT["title"],
                 color=OVER if over else "black", loc="left")
    ax.set_ylim(0, max(peak, capacity_bytes / GiB) * 1.12)
    ax.tick_params(labelsize=7)
    ax.grid(color="#e0e0e0", linewidth=0.5)
