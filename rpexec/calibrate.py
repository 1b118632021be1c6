"""`rpexec calibrate`: measure this machine into a machine file (a topology TOML that `--gpus` takes as a
complete server), through the code paths rpexec runs and under the concurrency it runs them in.

What it measures, and what rpsim does with it:
- GEMM rates over a grid of (m, n, k) shapes spanning what transformer layers produce (F.linear, as the
  executor's layers call it) -> the GPU's GEMM table (rpsim.specs.gemm_table);
- causal scaled-dot-product attention forward and backward rates -> attention times;
- device-memory copy bandwidth and the time of a minimal kernel -> the roofline's memory and floor;
- rpexec.model's RoPE, GQA repeat and layout copies over strided tensors at layers' shapes, forward and
  backward (rpexec.strided_probe) -> the rate rpsim prices those kernels' bytes at;
- pinned host<->GPU copies per GPU, one direction and both at once, and on all GPUs at once; P2P
  between GPUs -> PCIe link efficiencies, the duplex factor, the root-complex capacity, P2P bandwidth;
- host DRAM bandwidth (a multi-threaded copy, reads plus writes) -> the socket's DRAM capacity;
- the CPU optimizer's rates (rpexec's own HostParams.step: Adam + refresh, and one gradient
  accumulation over a tensor beyond the last-level cache, and over tensors that fit it), alone -> the
  host's optimizer rates and its cache-resident accumulation rate (rpsim.costs.cpu_optimizer); and again while DMA copies run on every GPU and
  lane threads keep the GPUs busy -> recorded as the check of rpsim's host-contention model (the
  machine file's [calibration] table; rpsim derives in-run rates from the shared DRAM, not from these).

On `--device cpu` every figure a CPU allows is real (GEMMs, attention, DRAM, the optimizer alone and
beside a DRAM-heavy thread); link figures come from the named GPU preset and are marked as such.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import torch
import torch.nn.functional as F

from rpexec.background_load import BackgroundLoad
from rpexec.machine_file import host_dram_gib
from rpexec.profile import (
    COPY_SIZES_BYTES,
    RESIDENT_ALLOCATIONS,
    RESIDENT_CURVE_SHARES,
    RESIDENT_TENSOR_CACHE_SHARE,
    cpu_optimizer_step_times,
    last_level_cache_bytes,
    profile_cpu_optimizer,
    reduced_thread_counts,
    resident_accumulate_rate,
)
from rpexec.session import DTYPES
from rpsim.costs.optimizer_threads import async_step_threads
from rpsim.specs import ModelSpec

# Grid axes: m is tokens per GEMM (down to MoE experts' few hundred rows), n and k the widths of the
# presets' projections (512-wide KV projections up to 28672-wide MLPs and large vocabularies).
CUDA_GEMM_MS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
CUDA_GEMM_WIDTHS = (512, 1024, 2048, 4096, 8192, 16384, 32768)
CPU_GEMM_MS = (64, 256)
CPU_GEMM_WIDTHS = (64, 256)


@dataclass(frozen=True)
class CalibrationSettings:
    device: str  # cpu | cuda
    n_gpus: int
    dtype: str
    gpu_preset: str
    reps: int = 3
    dram_test_bytes: int = 1 << 30
    optimizer_params: int | None = None  # None: a state eight times the last-level cache (rpexec.profile)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_s(device: torch.device, fn: Callable[[], Any], reps: int, inner: int = 1) -> float:
    """Median seconds of one call of fn, over `reps` timings of `inner` back-to-back calls, after one
    warm-up call; on CUDA the whole batch is timed from the host after a synchronize."""
    fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        times.append((time.perf_counter() - t) / inner)
    return statistics.median(times)


def gemm_grid(device: torch.device, dtype: torch.dtype, ms, widths, reps: int) -> list[list[float]]:
    """[m, n, k, achieved TFLOP/s] of F.linear(x (m x k), w (n x k)) over the grid."""
    rows = []
    for m in ms:
        for n in widths:
            for k in widths:
                x = torch.randn(m, k, device=device, dtype=dtype)
                w = torch.randn(n, k, device=device, dtype=dtype)
                flops = 2.0 * m * n * k
                inner = max(1, min(50, int(2e11 // flops))) if device.type == "cuda" else 1
                seconds = time_s(device, lambda x=x, w=w: F.linear(x, w), reps, inner)
                rows.append([m, n, k, flops / seconds / 1e12])
                del x, w
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def attention_rates(device: torch.device, dtype: torch.dtype, reps: int) -> dict[str, float]:
    """Causal SDPA as the executor's attention calls it; rates count the causal half of the score work
    (4 b s^2 q_width / 2 forward, twice that backward), as rpsim.costs.roofline does."""
    b, heads, seq, head_dim = (4, 32, 2048, 128) if device.type == "cuda" else (1, 4, 256, 32)
    q, k, v = (torch.randn(b, heads, seq, head_dim, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))
    probe = torch.randn(b, heads, seq, head_dim, device=device, dtype=dtype)

    def forward() -> None:
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward_backward() -> None:
        (F.scaled_dot_product_attention(q, k, v, is_causal=True) * probe).sum().backward()

    fwd_s = time_s(device, forward, reps)
    bwd_s = max(time_s(device, forward_backward, reps) - fwd_s, 1e-9)
    causal_fwd_flops = 4.0 * b * seq * seq * heads * head_dim / 2
    return {"forward_tflops": causal_fwd_flops / fwd_s / 1e12, "backward_tflops": 2 * causal_fwd_flops / bwd_s / 1e12,
            "shape": f"b={b} heads={heads} seq={seq} head_dim={head_dim} causal"}


def device_memory(device: torch.device, reps: int) -> dict[str, float]:
    """Copy bandwidth of device memory (read + write) and the time of a minimal kernel."""
    size = (1 << 30) if device.type == "cuda" else (64 << 20)
    a = torch.empty(size, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    copy_s = time_s(device, lambda: b.copy_(a), reps, inner=5 if device.type == "cuda" else 1)
    tiny = torch.zeros(1, device=device)
    floor_s = time_s(device, lambda: tiny.add_(1.0), reps, inner=200)
    return {"memory_bandwidth_gb_per_s": 2 * size / copy_s / 1e9, "kernel_floor_us": floor_s * 1e6}


def dram_bandwidth_bytes_per_s(n_bytes: int, reps: int) -> float:
    """Host DRAM, reads plus writes, of torch's multi-threaded copy between two fresh buffers (STREAM's
    copy kernel counts both; McCalpin, STREAM benchmark). Buffers are touched before timing."""
    a = torch.ones(n_bytes // 4, dtype=torch.float32)
    b = torch.zeros_like(a)
    seconds = time_s(torch.device("cpu"), lambda: b.copy_(a), reps)
    return 2 * a.numel() * 4 / seconds


def _copy_rate(pairs: list[tuple[torch.Tensor, torch.Tensor, torch.cuda.Stream]], reps: int) -> float:
    """Bytes/s of all copies issued at once, each on its own stream (they run concurrently)."""
    def issue() -> None:
        for src, dst, stream in pairs:
            with torch.cuda.stream(stream):
                dst.copy_(src, non_blocking=True)
        for d in range(torch.cuda.device_count()):
            torch.cuda.synchronize(d)
    total = sum(src.numel() * src.element_size() for src, _, _ in pairs)
    return total / time_s(torch.device("cuda", 0), issue, reps)


def link_rates(n_gpus: int, reps: int) -> dict[str, Any]:
    """Pinned copies at the largest profile size: per GPU alone (H2D, D2H, both), all GPUs at once, P2P."""
    size = COPY_SIZES_BYTES[-1]
    gpus = [torch.device("cuda", g) for g in range(n_gpus)]
    host_up = [torch.empty(size, dtype=torch.uint8, pin_memory=True) for _ in gpus]
    host_down = [torch.empty(size, dtype=torch.uint8, pin_memory=True) for _ in gpus]
    dev_in = [torch.empty(size, dtype=torch.uint8, device=d) for d in gpus]
    dev_out = [torch.empty(size, dtype=torch.uint8, device=d) for d in gpus]
    up = [torch.cuda.Stream(d) for d in gpus]
    down = [torch.cuda.Stream(d) for d in gpus]
    per_gpu = []
    for g in range(n_gpus):
        h2d = _copy_rate([(host_up[g], dev_in[g], up[g])], reps)
        d2h = _copy_rate([(dev_out[g], host_down[g], down[g])], reps)
        both = _copy_rate([(host_up[g], dev_in[g], up[g]), (dev_out[g], host_down[g], down[g])], reps)
        per_gpu.append({"h2d_gb_per_s": h2d / 1e9, "d2h_gb_per_s": d2h / 1e9, "both_gb_per_s": both / 1e9})
    all_h2d = _copy_rate([(host_up[g], dev_in[g], up[g]) for g in range(n_gpus)], reps)
    all_d2h = _copy_rate([(dev_out[g], host_down[g], down[g]) for g in range(n_gpus)], reps)
    all_both = _copy_rate([(host_up[g], dev_in[g], up[g]) for g in range(n_gpus)]
                          + [(dev_out[g], host_down[g], down[g]) for g in range(n_gpus)], reps)
    out: dict[str, Any] = {"per_gpu": per_gpu, "all_h2d_gb_per_s": all_h2d / 1e9, "all_d2h_gb_per_s": all_d2h / 1e9,
                           "all_both_gb_per_s": all_both / 1e9}
    if n_gpus > 1:
        out["p2p_gb_per_s"] = _copy_rate([(dev_out[0], dev_in[1], down[0])], reps) / 1e9
    return out


# A decoder small enough that its kernels take a few microseconds on the device, so that timing its
# layers measures the host's cost to issue them (Python, the dispatcher, autograd, functional_call), not
# the device. GQA (2 query heads per KV head) so the repeat kernels are issued as in the real models.
ISSUE_MODEL = ModelSpec(name="issue-probe", n_layers=1, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
                        mlp_width=512, vocab=1024)


def host_issue_s(device: torch.device, dtype: torch.dtype, reps: int, calls: int = 100) -> dict[str, list[float]]:
    """Seconds the host spends issuing one pipeline layer of each kind (embed, layer, head) the way
    rpexec's handlers run it (torch.func.functional_call on uploaded weights): a forward without
    autograd (F under recomputation), a forward with autograd, and a forward with autograd plus its
    backward (a recompute-and-backward B). Each figure is the median over `reps` of `calls` back-to-back
    calls, one synchronize at the end."""
    from torch.func import functional_call

    from rpexec.model import build_layers, skeleton_layers
    real = [layer.to(device, dtype) for layer in build_layers(ISSUE_MODEL)]
    skel = skeleton_layers(ISSUE_MODEL)
    weights = [dict(layer.named_parameters()) for layer in real]
    ids = torch.randint(0, ISSUE_MODEL.vocab, (1, 16), device=device)
    x = torch.randn(1, 16, ISSUE_MODEL.hidden, device=device, dtype=dtype)
    out: dict[str, list[float]] = {}
    for kind, index in (("embed", 0), ("layer", 1), ("head", 2)):
        def run(grad: bool, backward: bool, index: int = index) -> None:
            inp = (ids,) if index == 0 else (x.detach().requires_grad_(grad),)
            if index == 2:
                inp = (*inp, ids)
            with torch.set_grad_enabled(grad):
                y = functional_call(skel[index], weights[index], inp)
            if backward:
                (y.float().sum() if y.dim() else y).backward()
        figures = []
        for grad, backward in ((False, False), (True, False), (True, True)):
            figures.append(time_s(device, lambda g=grad, b=backward: run(g, b), reps, inner=calls))
        out[kind] = figures
    return out


def extra_allocations(s: CalibrationSettings) -> int:
    """Fresh allocations per point of the residency curve and per reduced thread count: as many as the
    half-cache probe's (their median damps the allocation spread), fewer at --reps below that."""
    return max(1, min(RESIDENT_ALLOCATIONS, s.reps))


def rates_at_threads(s: CalibrationSettings, threads: int) -> dict[str, Any]:
    """profile_cpu_optimizer's rates and the cache-resident one with torch's intra-op pool at `threads`."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out: dict[str, Any] = {"threads": threads, **profile_cpu_optimizer(s.dtype, s.optimizer_params, s.reps)}
        resident = resident_accumulate_rate(s.dtype, s.reps, allocations=extra_allocations(s))
    finally:
        torch.set_num_threads(before)
    if resident is not None:
        out["resident_accumulate_params_per_s"] = resident["resident_accumulate_params_per_s"]
    return out


def optimizer_rates(s: CalibrationSettings) -> dict[str, Any]:
    """The optimizer alone, the background load alone, then both at once: each side's slowdown is what
    the other costs it (shared DRAM, cores). Alone also over tensors filling several shares of the cache
    and at fewer threads (rpsim.costs.cpu_optimizer's residency curve and thread scaling)."""
    alone = profile_cpu_optimizer(s.dtype, s.optimizer_params, s.reps)
    resident = resident_accumulate_rate(s.dtype, s.reps)
    if resident is not None:
        alone["resident"] = resident
        alone["resident_by_share"] = [resident if share == RESIDENT_TENSOR_CACHE_SHARE
                                      else resident_accumulate_rate(s.dtype, s.reps, share=share,
                                                                    allocations=extra_allocations(s))
                                      for share in RESIDENT_CURVE_SHARES]
    alone["by_threads"] = [rates_at_threads(s, t) for t in reduced_thread_counts(os.cpu_count() or 1)]
    with BackgroundLoad(s.device, s.n_gpus, DTYPES[s.dtype]) as quiet:
        time.sleep(2.0)
    with BackgroundLoad(s.device, s.n_gpus, DTYPES[s.dtype]) as load:
        loaded: dict[str, Any] = cpu_optimizer_step_times(s.dtype, alone["params"], s.reps)
    loaded["background_copy_gb_per_s"] = load.copied_bytes / load.elapsed_s / 1e9
    loaded["background_alone_copy_gb_per_s"] = quiet.copied_bytes / quiet.elapsed_s / 1e9
    loaded["background_gemm_tflops"] = load.gemm_flops / load.elapsed_s / 1e12
    loaded["background_alone_gemm_tflops"] = quiet.gemm_flops / quiet.elapsed_s / 1e12
    loaded["background"] = ("H2D + D2H copies on every GPU and one Python lane thread per GPU running GEMMs"
                            if s.device == "cuda" else "one thread copying host buffers")
    if resident is not None:
        alone["resident_beside_copies"] = resident_beside_copies(s)
    return {"alone": alone, "under_load": loaded}


def resident_beside_copies(s: CalibrationSettings) -> dict[str, Any]:
    """The cache-resident pass (resident_accumulate_rate, one allocation) alone and beside H2D + D2H copies
    on every GPU (no GEMM lanes), at the thread count rpexec gives a STEP beside that many busy threads
    (rpsim.costs.optimizer_threads: a core left to each). On the one-H200 host a llama-1.8b layer's later
    passes took 1.65x as long beside the copies at 11 threads, where rpsim's DRAM sharing put them at 1.0x
    (their 2 B per parameter from DRAM hardly compete; benchmarks/step_under_load.py): inbound DMA passes
    through the last-level cache (Intel DDIO), which the resident passes work in. What the two moved
    together is the cache's capacity for them (rpexec.machine_file.last_level_cache_gb_per_s)."""
    dtype = DTYPES[s.dtype]
    background = BackgroundLoad(s.device, s.n_gpus, dtype, compute=False)
    threads = async_step_threads(os.cpu_count() or 1, 1 + len(background.threads))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        alone = resident_accumulate_rate(s.dtype, s.reps, allocations=1)
        with background as load:
            beside = resident_accumulate_rate(s.dtype, s.reps, allocations=1)
    finally:
        torch.set_num_threads(before)
    assert alone is not None and beside is not None  # (the caller checked the cache size)
    return {"threads": threads, "alone_params_per_s": alone["resident_accumulate_params_per_s"],
            "beside_params_per_s": beside["resident_accumulate_params_per_s"],
            "copies_gb_per_s": load.copied_bytes / load.elapsed_s / 1e9,
            "background": "H2D + D2H copies on every GPU" if s.device == "cuda" else "one thread copying host buffers"}


def measure(s: CalibrationSettings, progress: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Every figure, raw, in a JSON-like dict (machine_table turns it into the machine file)."""
    from rpexec.strided_probe import strided_elementwise_rates  # it times with time_s from here
    dev = torch.device("cuda", 0) if s.device == "cuda" else torch.device("cpu")
    dt = DTYPES[s.dtype]
    cuda = s.device == "cuda"
    out: dict[str, Any] = {"settings": s.__dict__.copy()}
    progress("GEMM grid")
    out["gemm"] = gemm_grid(dev, dt, CUDA_GEMM_MS if cuda else CPU_GEMM_MS,
                            CUDA_GEMM_WIDTHS if cuda else CPU_GEMM_WIDTHS, s.reps)
    progress("attention")
    out["attention"] = attention_rates(dev, dt, s.reps)
    progress("device memory")
    out["device_memory"] = device_memory(dev, s.reps)
    progress("strided elementwise kernels (RoPE, GQA repeat, layout copies)")
    out["strided_elementwise"] = strided_elementwise_rates(dev, dt, s.reps)
    progress("host issue cost per layer")
    out["issue_s"] = host_issue_s(dev, dt, s.reps)
    progress("host DRAM")
    out["dram_gb_per_s"] = dram_bandwidth_bytes_per_s(s.dram_test_bytes, s.reps) / 1e9
    if cuda:
        progress("links")
        out["links"] = link_rates(s.n_gpus, s.reps)
    progress("CPU optimizer, alone and under load")
    out["optimizer"] = optimizer_rates(s)
    out["conditions"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(dev) if cuda else platform.processor() or platform.machine(),
        "cuda": torch.version.cuda or "none", "cpu_threads": torch.get_num_threads(), "host_cores": os.cpu_count(),
        "last_level_cache_bytes": last_level_cache_bytes(), "host_dram_gib": round(host_dram_gib(), 1),
    }
    return out
