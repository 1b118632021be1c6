"""Display-unit conversions, used only at the edges (CLI, plots). Inside, everything is SI."""
from __future__ import annotations

MiB = 1024**2
GiB = 1024**3
GB = 1e9
TFLOPS = 1e12


def fmt_gib(n_bytes: float) -> str:
    return f"{n_bytes / GiB:.1f} GiB"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"
