"""Stage/microbatch labels for compute bars, only where they fit: each bar's own label ("3F5") when every
bar of a run fits one, else one label for the run of consecutive microbatches of a stage ("3F0-7"), else
the stage alone ("3F", then "3": the colour gives the kind), else none. Labels never overlap because each
stays inside its own bar or run."""
from __future__ import annotations

from dataclasses import dataclass

from rpsim.sim.trace import TraceEvent

CHAR_EM = 0.62  # mean advance of DejaVu Sans digits and capitals, in ems (measured on matplotlib's default)
PAD_PT = 2.0  # breathing room so a label never touches its bar's ends
RUN_GAP = 0.15  # bars this close (in bar lengths) form a run; wider gaps would put its label on idle grey


@dataclass(frozen=True)
class BarLabel:
    x: float  # centre, in axis units
    text: str
    kind: str


def text_width_pt(text: str, fontsize_pt: float) -> float:
    return len(text) * CHAR_EM * fontsize_pt + PAD_PT


def compute_runs(events: tuple[TraceEvent, ...] | list[TraceEvent]) -> list[list[TraceEvent]]:
    """Maximal runs of back-to-back bars of one stage and kind over consecutive microbatches (a RoundPipe
    job, a GPipe forward phase): the natural unit to label when single bars are too narrow."""
    out: list[list[TraceEvent]] = []
    for e in events:
        if e.stage is None or e.mb is None:
            continue
        if out:
            p = out[-1][-1]
            joined = (e.kind, e.stage, e.it) == (p.kind, p.stage, p.it) and e.mb == (p.mb or 0) + 1
            if joined and e.start_s - p.end_s <= RUN_GAP * (p.end_s - p.start_s):
                out[-1].append(e)
                continue
        out.append([e])
    return out


def compute_labels(events: tuple[TraceEvent, ...] | list[TraceEvent], scale: float, pt_per_unit: float,
                   fontsize_pt: float) -> list[BarLabel]:
    """Labels for one compute row; `scale` turns seconds into axis units, `pt_per_unit` axis units into
    points on the page (so the fit test holds for PNG, SVG and PDF alike)."""
    labels: list[BarLabel] = []
    for run in compute_runs(events):
        first, last = run[0], run[-1]
        head = f"{first.stage}{first.kind}"

        def fits(text: str, start_s: float, end_s: float) -> bool:
            return text_width_pt(text, fontsize_pt) <= (end_s - start_s) * scale * pt_per_unit

        if all(fits(f"{head}{e.mb}", e.start_s, e.end_s) for e in run):
            labels += [BarLabel((e.start_s + e.end_s) / 2 * scale, f"{head}{e.mb}", e.kind) for e in run]
            continue
        whole = f"{head}{first.mb}-{last.mb}" if len(run) > 1 else f"{head}{first.mb}"
        for text in (whole, head, str(first.stage)):
            if fits(text, first.start_s, last.end_s):
                labels.append(BarLabel((first.start_s + last.end_s) / 2 * scale, text, first.kind))
                break
    return labels


# The key to the labels above, printed on every chart that draws them.
LABEL_KEY = ("bar labels <stage><kind><microbatch>: 3F5 = stage 3 forward, microbatch 5; 3B0-7 = stage 3 "
             "backward, microbatches 0-7; 3F or 3 = stage 3 where bars are narrow. F forward, B backward, "
             "FB fused, I/W input/weight grad")
