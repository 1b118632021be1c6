"""Draws trace rows onto a matplotlib Axes: one broken_barh (a single PolyCollection) per row and kind,
so the ~18k bars of a llama-70b RoundPipe trace render in about a second. Every collection carries a
gid naming its panel, device, lane and kind, so `bar_counts` counts exactly the rectangles drawn."""
from __future__ import annotations

from collections import Counter, defaultdict
from statistics import median

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rpsim.ir import CPU
from rpsim.plot.labels import compute_labels
from rpsim.plot.rows import LaneRow
from rpsim.plot.style import DARK_KINDS, IDLE_COLOUR, LANE_TITLES, kind_colour, kind_order
from rpsim.sim.trace import TraceEvent

BAR_GID = "bars"
BAR_FILL = 0.84  # fraction of a row's height a bar covers: rows stay apart without grid lines
EDGE_MIN_PT = 4.0  # white separators only between bars this wide; narrower ones would turn white
LABEL_PT = 6.0


def draw_rows(ax: Axes, rows: list[LaneRow], scale: float, pt_per_unit: float, panel: str = "",
              idle_span: tuple[float, float] | None = None, labels: bool = True) -> None:
    """Bars of every row; on compute rows, a light band behind them so idle time reads as grey gaps."""
    for row in rows:
        pad = row.height * (1 - BAR_FILL) / 2
        band = (row.y + pad, row.height - 2 * pad)
        if idle_span is not None and row.lane == "compute":
            lo, hi = idle_span
            ax.broken_barh([(lo * scale, (hi - lo) * scale)], band, facecolors=IDLE_COLOUR, linewidth=0,
                           zorder=1)
        by_kind: dict[str, list[TraceEvent]] = defaultdict(list)
        for e in row.events:
            by_kind[e.kind].append(e)
        for kind in sorted(by_kind, key=lambda k: (kind_order(k), k)):
            spans = [(e.start_s * scale, (e.end_s - e.start_s) * scale) for e in by_kind[kind]]
            wide = median(w for _, w in spans) * pt_per_unit >= EDGE_MIN_PT
            ax.broken_barh(spans, band, facecolors=kind_colour(kind), edgecolor="white",
                           linewidth=0.4 if wide else 0.0, zorder=2,
                           gid=f"{BAR_GID}|{panel}|{row.gpu}|{row.lane}|{kind}")
        if labels and row.lane == "compute":
            for lab in compute_labels(row.events, scale, pt_per_unit, LABEL_PT):
                # A backing box of the bar's colour keeps a run's white separators from crossing the text.
                ax.text(lab.x, row.centre, lab.text, ha="center", va="center", fontsize=LABEL_PT, zorder=3,
                        color="white" if lab.kind in DARK_KINDS else "black", clip_on=True,
                        bbox={"facecolor": kind_colour(lab.kind), "edgecolor": "none", "pad": 0.3})


def row_label(row: LaneRow, with_lane: bool = True) -> str:
    if row.gpu == CPU:
        return f"host {LANE_TITLES.get(row.lane, row.lane)}"
    if row.lane == "compute":
        return f"GPU {row.gpu}" + (" compute" if with_lane else "")
    return LANE_TITLES.get(row.lane, row.lane)


def set_row_ticks(ax: Axes, rows: list[LaneRow], with_lane: bool = True) -> None:
    ax.set_yticks([r.centre for r in rows])
    ax.set_yticklabels([row_label(r, with_lane) for r in rows])
    for tick, r in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_fontsize(8 if r.lane == "compute" else 6.5)
        tick.set_fontweight("bold" if r.lane == "compute" else "normal")
    ax.tick_params(axis="y", length=0)


def bar_counts(fig: Figure) -> Counter[tuple[str, int, str]]:
    """Rectangles drawn per (panel, device, lane), read back from the figure's collections."""
    counts: Counter[tuple[str, int, str]] = Counter()
    for ax in fig.axes:
        for coll in ax.collections:
            gid = coll.get_gid() or ""
            if gid.startswith(BAR_GID + "|"):
                _, panel, gpu, lane, _kind = gid.split("|")
                counts[(panel, int(gpu), lane)] += len(coll.get_paths())
    return counts
