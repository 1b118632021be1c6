"""Samples each GPU's SM clock, power draw and active clock-limit reasons with `nvidia-smi -lms` while a
benchmark system runs, and summarises the samples taken while the GPU was working (power above a third
of the largest draw seen: the steady iterations, not the set-up around them).

Why: on 2x H200 both rpexec and the `roundpipe` library run their steady iterations at the GPUs' software
power cap (limit reason 0x4), so the SM clock, and with it every compute-bound kernel's time, is set by
the energy a system spends per unit of work (benchmarks/notes-rpexec.md, session 10)."""
from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

QUERY = "index,clocks.sm,power.draw,clocks_throttle_reasons.active"
SW_POWER_CAP = 0x4  # nvidia-smi clocks_event_reasons: SW Power Cap


def parse_samples(text: str) -> dict[int, list[tuple[float, float, int]]]:
    """`nvidia-smi --query-gpu=QUERY --format=csv,noheader,nounits` lines -> gpu -> [(MHz, W, reasons)];
    lines that do not parse (a value "[N/A]", a cut last line) are left out."""
    out: dict[int, list[tuple[float, float, int]]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 4:
            continue
        try:
            out.setdefault(int(cells[0]), []).append((float(cells[1]), float(cells[2]), int(cells[3], 16)))
        except ValueError:
            continue
    return out


def summarise(samples: dict[int, list[tuple[float, float, int]]]) -> dict[str, dict[str, float]]:
    """Per GPU, over its working samples: median SM clock (MHz) and power (W), and the fraction of them
    limited by the software power cap."""
    out = {}
    for gpu, rows in sorted(samples.items()):
        peak_w = max(w for _, w, _ in rows)
        busy = [r for r in rows if r[1] > peak_w / 3]
        out[str(gpu)] = {"sm_mhz": statistics.median(r[0] for r in busy), "power_w": statistics.median(r[1] for r in busy),
                         "power_capped": sum(1 for r in busy if r[2] & SW_POWER_CAP) / len(busy), "samples": len(busy)}
    return out


@contextmanager
def sampling_clocks(result: dict, period_ms: int = 250) -> Iterator[None]:
    """Fills result["gpu_clocks"] with summarise() of the samples taken while the block ran; leaves it
    out where nvidia-smi is missing."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        yield
        return
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", f"-lms={period_ms}"],
                                stdout=log, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.seek(0)
            samples = parse_samples(log.read())
            if samples:
                result["gpu_clocks"] = summarise(samples)
