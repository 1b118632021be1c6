"""Records every CUDA kernel, copy and memset of a run with torch.profiler (CUDA activity only: CUPTI's
activity buffers, no host-op recording, so the lane threads' launch rate is what it is without the
profiler's per-op callbacks) and writes a gzipped Chrome trace, for benchmarks/kernel_compare.py."""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
        partial = path.with_name(path.name + ".partial")
        with open(raw, "rb") as src, gzip.open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(partial, path)  # atomic: a half-written trace never carries the final name
    finally:
        os.unlink(raw)
