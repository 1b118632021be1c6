"""Probes of the host while an rpexec run goes (benchmarks/diagnose_rpexec.py): CPU seconds per thread
from /proc, and how late a thread sleeping 1 ms wakes (the wait for the GIL, plus scheduling)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path


class ThreadSampler:
    """CPU seconds per thread, sampled from /proc/self/task/*/stat while a run goes."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self.stop = threading.Event()
        self.cpu_s: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self.tick = os.sysconf("SC_CLK_TCK")
        self.thread = threading.Thread(target=self._loop, daemon=True, name="diag-sampler")

    def _sample(self) -> None:
        for t in threading.enumerate():
            if t.native_id is not None:
                self.names[t.native_id] = t.name
        for task in Path("/proc/self/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                self.cpu_s[int(task.name)] = (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
            except (OSError, IndexError, ValueError):
                continue

    def _loop(self) -> None:
        while not self.stop.wait(self.period_s):
            self._sample()

    def __enter__(self) -> ThreadSampler:
        self._sample()
        self.start = dict(self.cpu_s)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()

    def summary(self) -> dict:
        groups: dict[str, float] = {}
        for tid, cpu in self.cpu_s.items():
            used = cpu - self.start.get(tid, 0.0)
            name = self.names.get(tid, "")
            if name.startswith("gpu"):
                key = "lane " + name
            elif name == "MainThread":
                key = "main"
            elif name.startswith("diag"):
                key = "diagnose probes"
            else:
                key = "other (OpenMP workers, CUDA, pools)"
            groups[key] = groups.get(key, 0.0) + used
        return {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


class GilProbe:
    """How late a thread that sleeps 1 ms wakes up: with a free GIL and idle cores, ~0.1 ms."""

    def __init__(self) -> None:
        self.late_s: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="diag-gil")

    def _loop(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            time.sleep(0.001)
            self.late_s.append(time.perf_counter() - t - 0.001)

    def __enter__(self) -> GilProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def summary(self) -> dict:
        xs = sorted(self.late_s) or [0.0]
        pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
        return {"samples": len(self.late_s), "p50_ms": pick(0.5) * 1e3, "p90_ms": pick(0.9) * 1e3,
                "p99_ms": pick(0.99) * 1e3, "max_ms": xs[-1] * 1e3}


def idle_gil_probe(seconds: float = 1.0) -> dict:
    with GilProbe() as probe:
        time.sleep(seconds)
    return probe.summary()
