"""The experiments' figures, drawn from small synthetic result frames (the experiments themselves take
minutes): every text stays inside the figure, e01's legend covers no bar, e02's log axis labels at least
three ticks, e04's labels are not clipped, and fonts are paper-sized."""
from __future__ import annotations

import itertools
import random
import re

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from experiments import e01_paper_ablation as e01
from experiments import e02_paper_throughput as e02
from experiments import e04_where_roundpipe_wins as e04
from rpsim.plot.style import FONT_PT


def _renderer(fig):
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def visible_texts(fig) -> list[Text]:
    """Texts that are drawn: tick labels only for ticks inside their axis's view (matplotlib keeps
    labels for ticks just outside it, which it does not draw)."""
    _renderer(fig)  # tick labels get their text when drawn
    ticks, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update((id(tick.label1), id(tick.label2)))
                inside = lo - 1e-9 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-9 * abs(hi - lo)
                drawn += [lab for lab in (tick.label1, tick.label2) if inside and lab.get_visible()]
    drawn += [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible()]
    return [t for t in drawn if t.get_text().strip()]


def assert_texts_inside(fig) -> None:
    renderer = _renderer(fig)
    box = fig.bbox
    for t in visible_texts(fig):
        ext = t.get_window_extent(renderer)
        assert ext.x0 >= box.x0 - 1 and ext.x1 <= box.x1 + 1 and ext.y0 >= box.y0 - 1 and ext.y1 <= box.y1 + 1, \
            f"text {t.get_text()!r} is clipped by the figure edge"


def assert_no_text_overlap(fig) -> None:
    renderer = _renderer(fig)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in visible_texts(fig)]
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), f"{ta!r} overlaps {tb!r}"


def drawn_extent(patch, renderer):
    """A bar's extent as drawn: clipped to its axes (a log-axis bar starts far below the view)."""
    return Bbox.intersection(patch.get_window_extent(renderer), patch.axes.bbox)


def assert_paper_fonts(fig) -> None:
    sizes = {round(t.get_fontsize(), 1) for t in visible_texts(fig)}
    assert min(sizes) >= min(FONT_PT.values()) - 0.6 and max(sizes) <= max(FONT_PT.values()) + 0.1, sizes


def e01_frames():
    rng = random.Random(1)
    rows, details = [], []
    for model, schedule in itertools.product(list(e01.PAPER_TIMES_MS), e01.SCHEDULES):
        parts = {k: rng.uniform(0, 15) for k in ("fill_pct", "drain_pct", "switch_pct", "intra_pct")}
        row = {"model": model, "schedule": schedule, "bubble_pct": sum(parts.values()), "makespan_ms": 1.0,
               **parts}
        rows.append(row)
        details.append({**row, "g0_rule": "paper", "closed_form_pct": rng.uniform(0, 30)})
    # A tall first panel, where the old legend sat on the bars
    rows[0].update(fill_pct=20.0, drain_pct=20.0, switch_pct=10.0, intra_pct=8.0)
    return rows, details


def test_e01_legend_covers_no_bar(tmp_path):
    rows, details = e01_frames()
    fig = e01.figure(rows, details, tmp_path / "e01.png")
    assert (tmp_path / "e01.png").stat().st_size > 10_000
    renderer = _renderer(fig)
    legend_box = fig.legends[0].get_window_extent(renderer)
    bars = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]
    assert len(bars) == len(rows) * 4
    assert not any(legend_box.overlaps(drawn_extent(b, renderer)) for b in bars)
    assert "RTX 4090" in fig.get_suptitle()
    assert_texts_inside(fig)
    assert_no_text_overlap(fig)
    assert_paper_fonts(fig)


def e02_rows():
    rng = random.Random(2)
    return [{"model": m, "system": s, "tokens_per_s": round(10 ** rng.uniform(3.2, 5.0)), "feasible": rng.random() > 0.3}
            for m in e02.RUNS for s in e02.SYSTEMS]


def test_e02_log_axis_labels_plain_ticks(tmp_path):
    fig = e02.figure(e02_rows(), tmp_path / "e02.png")
    assert (tmp_path / "e02.png").stat().st_size > 10_000
    ax = fig.axes[0]
    labels = [t.get_text() for t in visible_texts(fig) if t in ax.get_yticklabels()]
    assert len(labels) >= 3, labels
    assert all(re.fullmatch(r"[\d,]+", lab) for lab in labels), labels  # 20,000, not 2x10^4
    assert "RTX 4090" in fig.get_suptitle()
    renderer = _renderer(fig)
    legend_box = fig.legends[0].get_window_extent(renderer)
    assert not any(legend_box.overlaps(drawn_extent(p, renderer)) for p in ax.patches)
    assert_texts_inside(fig)
    assert_no_text_overlap(fig)
    assert_paper_fonts(fig)


def e04_rows(rng=None):
    rng = rng or random.Random(4)
    rows = []
    for sweep, values in e04.SWEEPS.items():
        for series in e04.SERIES.get(sweep, [{}]):
            point = {**e04.BASE, **series}
            low, high = (0.05, 0.6) if series else (0.9, 1.6)  # as in the real sweeps: long mbs win, short lose
            for value in values:
                fits = rng.random() > 0.2
                rows.append({"sweep": sweep, "value": value, "ratio": round(rng.uniform(low, high), 3) if fits else "",
                             "best_baseline": rng.choice([*e04.BASELINES, "none fits"]) if fits else
                             rng.choice(["none fits", "gpipe"]),
                             "mb_tokens": point["mb_size"] * (value if sweep == "seq" else point["seq"])})
    return rows


@pytest.mark.parametrize("seed", [4, 5])
def test_e04_labels_are_neither_clipped_nor_overlapping(tmp_path, seed):
    fig = e04.figure(e04_rows(random.Random(seed)), tmp_path / "e04.png")
    assert (tmp_path / "e04.png").stat().st_size > 10_000
    assert "Llama-3.1-8B" in fig.get_suptitle() and "RTX 4090" in fig.get_suptitle()
    assert_texts_inside(fig)
    assert_no_text_overlap(fig)
    assert_paper_fonts(fig)


def test_e03_figure_is_one_column_wide(tmp_path):
    from experiments import e03_sim_vs_real as e03
    from rpsim.plot.style import COLUMN_IN
    rng = random.Random(3)
    rows = [{"schedule": s, "gpus": 1 + k % 2, "measured_s": m, "predicted_s": m * rng.uniform(0.6, 1.0)}
            for s in e03.SCHEDULES for k, m in enumerate(rng.uniform(1, 6) for _ in range(4))]
    fig = e03.figure(rows, tmp_path / "e03.png")
    assert (tmp_path / "e03.png").stat().st_size > 10_000
    assert fig.get_figwidth() == pytest.approx(COLUMN_IN)
    assert "H200" in fig.get_suptitle() and "1 and 2 GPUs" in fig.get_suptitle()
    assert_texts_inside(fig)
    assert_no_text_overlap(fig)
    assert_paper_fonts(fig)
