"""Writing a figure: the format follows the file extension (PNG, SVG or PDF), the write is atomic, and
vector outputs carry no creation date so the same inputs give the same bytes."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from rpsim.errors import SpecError
from rpsim.report.files import write_bytes_atomic

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
NO_DATES = {"png": None, "svg": {"Date": None}, "pdf": {"CreationDate": None}}
DPI = 100  # ~100 dpi keeps a 14-inch chart readable and under 300 KB


def figure_format(path: str | Path) -> str:
    """The format a figure path asks for; SpecError naming the valid extensions otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise SpecError(f"figure file {str(path)!r}: unknown extension {suffix or '(none)'!r}; "
                        f"valid choices: {', '.join(FORMATS)}")
    return FORMATS[suffix]


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> None:
    fmt = figure_format(path)
    buf = io.BytesIO()
    # SVG element ids hash a random salt unless one is fixed; fixing it makes SVGs reproducible too.
    with matplotlib.rc_context({"svg.hashsalt": "rpsim"}):
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=NO_DATES[fmt])
    write_bytes_atomic(path, buf.getvalue())
