"""Records every CUDA kernel, copy and memset of a run with torch.profiler (CUDA activity only: CUPTI's
activity buffers, no host-op recording, so the lane threads' launch rate is what it is without the
profiler's per-op callbacks) and writes it in a compact gzipped form for benchmarks/kernel_compare.py:
{"format": "kernel-rows", "names": [...], "rows": [[ts_us, dur_us, device, stream, cat, name index]]}.
At 8B a run's Chrome trace is ~20 MB gzipped; the rows are ~2 MB."""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def compact_rows(chrome_events: list[dict]) -> dict:
    names: list[str] = []
    index: dict[str, int] = {}
    rows = []
    for e in chrome_events:
        if e.get("ph") != "X" or e.get("cat") not in GPU_CATEGORIES:
            continue
        name = e.get("name", "")
        if name not in index:
            index[name] = len(names)
            names.append(name)
        args = e.get("args", {})
        rows.append([round(e["ts"], 3), round(e["dur"], 3), args.get("device", e.get("pid")),
                     args.get("stream", e.get("tid")), e["cat"], index[name]])
    return {"format": "kernel-rows", "names": names, "rows": rows}


@contextmanager
def recording_kernels(path: Path) -> Iterator[None]:
    from torch.profiler import ProfilerActivity, profile
    path.parent.mkdir(parents=True, exist_ok=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        yield
    fd, raw = tempfile.mkstemp(suffix=".json", dir=path.parent)
    os.close(fd)
    try:
        prof.export_chrome_trace(raw)
        with open(raw) as f:
            data = json.load(f)
        partial = path.with_name(path.name + ".partial")
        with gzip.open(partial, "wt") as dst:
            json.dump(compact_rows(data["traceEvents"] if isinstance(data, dict) else data), dst)
        os.replace(partial, path)  # atomic: a half-written trace never carries the final name
    finally:
        os.unlink(raw)
