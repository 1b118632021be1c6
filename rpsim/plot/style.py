"""How each action kind looks (legend label, colour), lane order and names, and the time unit of an axis."""
from __future__ import annotations

from rpsim.ir import LANES

# Colour-blind-safe Tableau 10. Compute kinds are saturated, transfers lighter, so the eye finds the
# compute lanes (where the bubbles are) first.
KIND_STYLE: dict[str, tuple[str, str]] = {
    "F": ("forward", "#4e79a7"),
    "B": ("backward", "#e15759"),
    "I": ("backward (input grad)", "#f28e2b"),
    "W": ("backward (weight grad)", "#59a14f"),
    "FB": ("fused forward+backward", "#b07aa1"),
    "ACT_IN": ("ACT_IN (activation upload)", "#76b7b2"),
    "ACT_OUT": ("ACT_OUT (activation download)", "#9c755f"),
    "LOAD": ("LOAD (weight upload)", "#edc948"),
    "OFFLOAD": ("OFFLOAD (gradient download)", "#ff9da7"),
    "SEND": ("SEND (P2P)", "#bab0ac"),
    "RECV": ("RECV (P2P)", "#8c8c8c"),
    "STEP": ("STEP (CPU optimizer)", "#3b3b3b"),
}
HIDDEN_KINDS = ("FREE",)  # instantaneous bookkeeping, nothing to see
IDLE_COLOUR = "#ececec"
FALLBACK_COLOUR = "#7f7f7f"  # kinds a measured trace may add that this table does not know
DARK_KINDS = ("F", "B", "FB", "STEP", "ACT_OUT")  # labels on these bars are drawn white

LANE_TITLES = {"compute": "compute", "h2d": "h2d act", "d2h": "d2h act", "param_h2d": "h2d weights",
               "grad_d2h": "d2h grads", "p2p": "p2p send", "p2p_recv": "p2p recv", "optimizer": "optimizer"}


def kind_label(kind: str) -> str:
    return KIND_STYLE.get(kind, (kind, ""))[0]


def kind_colour(kind: str) -> str:
    return KIND_STYLE.get(kind, ("", FALLBACK_COLOUR))[1]


def kind_order(kind: str) -> int:
    order = list(KIND_STYLE)
    return order.index(kind) if kind in order else len(order)


def lane_order(lane: str) -> int:
    return LANES.index(lane) if lane in LANES else len(LANES)


def time_unit(span_s: float) -> tuple[str, float]:
    """Milliseconds for short runs (a 1.5 s axis reads better as 0..1500 ms), seconds otherwise."""
    return ("ms", 1e3) if span_s < 2.0 else ("s", 1.0)


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 2.0 else f"{seconds:.2f} s"


# Paper sizes: a two-column paper (ACM / IEEE templates) has 3.33-inch columns on a 7-inch text width.
# Figures are drawn at their printed size, so these point sizes are the sizes on the page: 9 pt titles,
# 8 pt labels and 7 pt ticks, legends and notes sit just under the templates' 9-10 pt body text.
COLUMN_IN = 3.33
PAGE_IN = 7.0
FONT_PT = {"title": 9.0, "label": 8.0, "tick": 7.0, "legend": 7.0, "note": 6.5}
PAPER_DPI = 200  # a 7-inch figure is 1400 px wide: sharp in print and on screen


def paper_rc() -> dict[str, object]:
    """matplotlib settings for figures drawn at paper size (the experiments' figures use them)."""
    return {"font.size": FONT_PT["label"], "axes.titlesize": FONT_PT["title"],
            "axes.labelsize": FONT_PT["label"], "xtick.labelsize": FONT_PT["tick"],
            "ytick.labelsize": FONT_PT["tick"], "legend.fontsize": FONT_PT["legend"],
            "figure.titlesize": FONT_PT["title"], "legend.frameon": False, "axes.spines.top": False,
            "axes.spines.right": False, "savefig.dpi": PAPER_DPI}
