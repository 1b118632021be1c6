"""Helpers shared by the experiment scripts: the results CSV writer."""
from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def finish(out: Path, root: Path, rows: list[dict], figure_name: str, started_s: float) -> None:
    """The tail every experiment shares: results.csv beside its figure, and one line saying where."""
    import time
    write_csv(out / "results.csv", rows)
    print(f"\nwrote {out.relative_to(root)}/results.csv, {figure_name} in {time.perf_counter() - started_s:.0f} s")
