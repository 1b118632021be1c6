"""Background work that loads the host the way a pipeline run does, for measuring the host optimizer's STEP
beside it (rpexec calibrate's under-load and beside-copies probes, benchmarks/step_under_load.py,
benchmarks/diagnose_rpexec.py, benchmarks/step_in_context.py)."""
from __future__ import annotations

import threading
import time

import torch
import torch.nn.functional as F

from rpexec.profile import COPY_SIZES_BYTES


class BackgroundLoad:
    """Background work that loads the host the way a pipeline run does: on CUDA, H2D and D2H copies on
    every GPU plus (compute=True) one Python lane thread per GPU issuing GEMMs and waiting on them
    (rpexec's lanes); on the CPU, a thread copying host buffers (DRAM traffic). Counts the bytes the
    copies moved. benchmarks/diagnose_rpexec.py runs it with and without the GEMM lanes, to tell the
    DMA's share of the optimizer's slowdown from the lane threads'."""

    def __init__(self, device: str, n_gpus: int, dtype: torch.dtype, compute: bool = True) -> None:
        self.stop = threading.Event()
        self.copied_bytes = 0
        self.gemm_flops = 0.0
        self.lock = threading.Lock()
        self.threads = []
        if device == "cuda":
            for g in range(n_gpus):
                self.threads.append(threading.Thread(target=self._dma, args=(g,), daemon=True))
                if compute:
                    self.threads.append(threading.Thread(target=self._compute, args=(g, dtype), daemon=True))
        else:
            self.threads.append(threading.Thread(target=self._host_copy, daemon=True))

    def __enter__(self) -> BackgroundLoad:
        self.t0 = time.perf_counter()
        for t in self.threads:
            t.start()
        time.sleep(0.2)  # let the traffic reach its steady rate
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()
        self.elapsed_s = time.perf_counter() - self.t0

    def _count(self, n: int) -> None:
        with self.lock:
            self.copied_bytes += n

    def _dma(self, g: int) -> None:
        size = COPY_SIZES_BYTES[-1]
        dev = torch.device("cuda", g)
        host_a = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        host_b = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        gpu_a = torch.empty(size, dtype=torch.uint8, device=dev)
        gpu_b = torch.empty(size, dtype=torch.uint8, device=dev)
        s_up, s_down = torch.cuda.Stream(dev), torch.cuda.Stream(dev)
        while not self.stop.is_set():
            with torch.cuda.stream(s_up):
                gpu_a.copy_(host_a, non_blocking=True)
            with torch.cuda.stream(s_down):
                host_b.copy_(gpu_b, non_blocking=True)
            s_up.synchronize()
            s_down.synchronize()
            self._count(2 * size)

    def _compute(self, g: int, dtype: torch.dtype) -> None:
        dev = torch.device("cuda", g)
        x = torch.randn(8192, 4096, device=dev, dtype=dtype)
        w = torch.randn(14336, 4096, device=dev, dtype=dtype)
        stream = torch.cuda.Stream(dev)
        while not self.stop.is_set():
            with torch.cuda.stream(stream):
                for _ in range(4):
                    F.linear(x, w)
            stream.synchronize()  # rpexec's lanes wait on CUDA events from Python the same way
            with self.lock:
                self.gemm_flops += 4 * 2.0 * x.shape[0] * w.shape[0] * x.shape[1]

    def _host_copy(self) -> None:
        a = torch.ones(16 << 20, dtype=torch.float32)
        b = torch.zeros_like(a)
        while not self.stop.is_set():
            b.copy_(a)
            self._count(2 * a.numel() * 4)
