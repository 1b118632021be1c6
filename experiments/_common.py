"""Helpers shared by the experiment scripts: the results CSV writer, measured sets kept as tarballs, a
machine file with some of its host keys left out."""
from __future__ import annotations

import csv
import tarfile
import tempfile
from pathlib import Path

_UNPACKED: dict[Path, Path] = {}


def measured_folder(path: str | Path) -> Path:
    """A folder of measured plans and traces; a .tar.gz of one (how later sets are kept, the tracked tree
    being near the 64 MiB a device call carries) is unpacked once per process into a temporary folder."""
    path = Path(path)
    if not path.name.endswith(".tar.gz"):
        return path
    if path not in _UNPACKED:
        folder = Path(tempfile.mkdtemp(prefix="rpsim-data-"))
        with tarfile.open(path) as tar:
            tar.extractall(folder, filter="data")
        _UNPACKED[path] = folder
    return _UNPACKED[path]


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


def machine_without(machine: Path, host_keys: list[str]) -> Path:
    """A copy of `machine` (in a temporary folder) whose [host] table lacks `host_keys`: the model those
    keys refine, on the same measurements (e03's "without the session-13 mechanisms" rows)."""
    import tomllib

    from rpsim.report.toml_text import toml_text
    table = tomllib.loads(machine.read_text())
    unknown = [k for k in host_keys if k not in table.get("host", {})]
    if unknown:
        raise SystemExit(f"--drop-host-keys {','.join(unknown)}: not in {machine}'s [host]; "
                         f"valid: {', '.join(table.get('host', {}))}")
    table["host"] = {k: v for k, v in table["host"].items() if k not in host_keys}
    out = Path(tempfile.mkdtemp(prefix="rpsim-machine-")) / machine.name
    out.write_text(toml_text(table))
    return out
