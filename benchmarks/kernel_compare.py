"""Compares the GPU work of runs recorded by `bench_rpexec.py --kernel-trace` (or any torch-profiler Chrome
trace): per GPU, over each trace's last SECONDS of GPU activity (its steady iterations), how busy the
compute stream was, kernel time by family, and the kernels whose time differs most between the traces.

    python3 benchmarks/kernel_compare.py OUT/8b-rpexec-roundpipe-kernels.json.gz@7.7 \\
        OUT/8b-library-auto-kernels.json.gz@7.1

SECONDS is the window to compare (e.g. two steady iterations: rpexec's iteration_s and the library's call
time from bench-<size>.json, times two); without it, the whole trace. Per-window figures are divided by
--per (default 2: per iteration for a two-iteration window). The compute stream of a GPU is the stream
with the most kernel time; copies are the profiler's gpu_memcpy events."""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field

from benchmarks.kernel_trace import GPU_CATEGORIES

# Kernel families by name, first match wins; names as CUDA libraries and ATen give them.
FAMILIES = (
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "splitk")),
    ("reduce", ("reduce", "norm", "softmax", "logsumexp")),
    ("copy/cat", ("copy", "cat", "index", "gather", "scatter", "fill")),
    ("elementwise", ("elementwise", "vectorized", "unrolled")),
)


def family(name: str) -> str:
    low = name.lower()
    return next((fam for fam, keys in FAMILIES if any(k in low for k in keys)), "other")


@dataclass
class Gpu:
    busy_us: float = 0.0
    kernels: int = 0
    by_family_us: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_name: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))
    copy_us: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    gaps_us: dict[str, list[float]] = field(default_factory=dict)
    other_streams_us: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # idle gap size class -> [count, total us]


def load_events(path: str) -> list[dict]:
    """GPU events of a torch-profiler Chrome trace, or of benchmarks/kernel_trace.py's compact rows."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    if isinstance(data, dict) and data.get("format") == "kernel-rows":
        names = data["names"]
        return [{"ph": "X", "ts": ts, "dur": dur, "pid": dev, "tid": stream, "cat": cat, "name": names[i],
                 "args": {"device": dev, "stream": stream}} for ts, dur, dev, stream, cat, i in data["rows"]]
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES]


# Idle gaps of the compute stream between one kernel's end and the next's start, by size: launch-bound
# issue leaves many gaps of tens of microseconds; waiting on a copy or another lane leaves few long ones.
GAP_CLASSES_US = ((20.0, "<20us"), (200.0, "20-200us"), (2000.0, "0.2-2ms"), (float("inf"), ">2ms"))


def gap_classes(intervals: list[tuple[float, float]]) -> dict[str, list[float]]:
    out = {label: [0, 0.0] for _, label in GAP_CLASSES_US}
    end = None
    for s, e in sorted(intervals):
        if end is not None and s > end:
            label = next(lab for bound, lab in GAP_CLASSES_US if s - end < bound)
            out[label][0] += 1
            out[label][1] += s - end
        end = e if end is None else max(end, e)
    return out


def union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def _dev(e: dict) -> int:
    return e["args"].get("device", e["pid"])


def _stream(e: dict) -> int:
    return e["args"].get("stream", e["tid"])


def summarise(events: list[dict], window_s: float | None) -> tuple[dict[int, Gpu], float]:
    """Per GPU over the window that ends with the last compute-stream kernel (a run's tail of copies and
    host steps is not GPU work to compare) and spans window_s seconds (None: from the first event)."""
    if not events:
        raise ValueError("no CUDA kernel or copy in this trace (was it recorded on a GPU?)")
    kernel_us: dict[tuple[int, int], float] = defaultdict(float)
    for e in events:
        if e["cat"] == "kernel":
            kernel_us[(_dev(e), _stream(e))] += e["dur"]
    compute: dict[int, int] = {}
    for (dev, stream), us in kernel_us.items():
        if us > kernel_us.get((dev, compute.get(dev, -1)), -1.0):
            compute[dev] = stream
    on_compute = [e for e in events if e["cat"] == "kernel" and compute.get(_dev(e)) == _stream(e)]
    last = max(e["ts"] + e["dur"] for e in (on_compute or events))
    lo = last - window_s * 1e6 if window_s else min(e["ts"] for e in events)
    gpus: dict[int, Gpu] = defaultdict(Gpu)
    spans: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if not lo <= e["ts"] < last:
            continue
        g = gpus[_dev(e)]
        if e["cat"] == "gpu_memcpy":
            g.copy_us[e["name"].split()[0] if e["name"] else "memcpy"] += e["dur"]
            continue
        if e["cat"] != "kernel":
            continue
        if _stream(e) != compute.get(_dev(e)):  # kernels beside the compute stream share its SMs
            g.other_streams_us[family(e["name"])] += e["dur"]
            continue
        g.kernels += 1
        g.by_family_us[family(e["name"])] += e["dur"]
        row = g.by_name[e["name"][:90]]
        row[0] += e["dur"]
        row[1] += 1
        spans[_dev(e)].append((e["ts"], e["ts"] + e["dur"]))
    for dev, iv in spans.items():
        gpus[dev].busy_us = union_us(iv)
        gpus[dev].gaps_us = gap_classes(iv)
    return dict(gpus), (last - lo) / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("traces", nargs="+", metavar="TRACE[@SECONDS]")
    p.add_argument("--per", type=float, default=2.0, help="divide window totals by this (iterations in it)")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    runs = []
    for arg in a.traces:
        path, _, secs = arg.partition("@")
        try:
            runs.append((path.rsplit("/", 1)[-1], *summarise(load_events(path), float(secs) if secs else None)))
        except (OSError, ValueError, KeyError) as e:
            print(f"kernel_compare: error: {arg}: {e}", file=sys.stderr)
            return 2
    ms = 1e-3 / a.per
    for name, gpus, window in runs:
        print(f"\n{name}: window {window:.3f} s, per {a.per:g}")
        for dev, g in sorted(gpus.items()):
            fams = ", ".join(f"{k} {v * ms:.1f}" for k, v in sorted(g.by_family_us.items(), key=lambda kv: -kv[1]))
            copies = ", ".join(f"{k} {v * ms:.1f}" for k, v in sorted(g.copy_us.items()))
            print(f"  gpu {dev}: compute stream busy {g.busy_us * ms:.1f} ms ({g.busy_us / 1e4 / window:.1f}% of the "
                  f"window), kernel sum {sum(g.by_family_us.values()) * ms:.1f} ms, {g.kernels / a.per:.0f} kernels; "
                  f"{fams}; copies {copies}")
            others = ", ".join(f"{k} {v * ms:.1f}" for k, v in sorted(g.other_streams_us.items()))
            print(f"    kernels on other streams: {others or 'none'}")
            print("    idle gaps: " + ", ".join(f"{lab} {n / a.per:.0f} x = {us * ms:.1f} ms"
                                               for lab, (n, us) in g.gaps_us.items()))
    names: dict[str, list[float]] = defaultdict(lambda: [0.0] * (2 * len(runs)))
    for i, (_, gpus, _) in enumerate(runs):
        for g in gpus.values():
            for k, (us, n) in g.by_name.items():
                names[k][2 * i] += us * ms
                names[k][2 * i + 1] += n / a.per
    spread = sorted(names.items(), key=lambda kv: -(max(kv[1][0::2]) - min(kv[1][0::2])))
    print(f"\nkernels by difference (ms, count per {a.per:g} and mean us per call, all GPUs): "
          + " | ".join(r[0] for r in runs))
    for k, row in spread[: a.top]:
        cells = "  ".join(f"{row[2 * i]:8.1f} ms {row[2 * i + 1]:6.0f} {1e3 * row[2 * i] / max(row[2 * i + 1], 1e-9):7.1f} us"
                          for i in range(len(runs)))
        print(f"  {cells}  {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
