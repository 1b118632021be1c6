"""`rpexec profile`: measure this machine into rpsim's profile.json schema: per-layer forward, backward
and recompute times (embedding, one transformer layer standing for all, head), host<->GPU and P2P copy
bandwidth across sizes (pinned, one at a time and both directions at once), and the CPU optimizer's
rates: Adam (with the fp16-copy refresh) and the accumulation of one downloaded gradient, params/s."""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rpexec.hostparams import HostParams
from rpexec.model import DecoderLayer, build_layers
from rpexec.session import DTYPES
from rpsim.specs import ModelSpec

COPY_SIZES_BYTES = (1 << 20, 16 << 20, 256 << 20)


def _timer(device: torch.device, fn: Callable[[], Any], reps: int) -> float:
    """Median seconds of fn over reps runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _fwd_bwd(layer: torch.nn.Module, make_input: Callable[[], tuple], device: torch.device, reps: int,
             loss_of: Callable[[Any], torch.Tensor]) -> tuple[float, float]:
    def forward() -> None:
        with torch.no_grad():
            layer(*make_input())

    def forward_backward() -> None:
        loss_of(layer(*make_input())).backward()

    fwd = _timer(device, forward, reps)
    both = _timer(device, forward_backward, reps)
    return fwd, max(both - fwd, 0.0)  # backward alone: the autograd pass beyond the forward


def profile_layers(model: ModelSpec, seq: int, mb_size: int, dtype: str, device: torch.device, reps: int
                   ) -> list[dict[str, Any]]:
    dt = DTYPES[dtype]
    layers = build_layers(model)
    embed, head = layers[0].to(device, dt), layers[-1].to(device, dt)
    ids = torch.randint(0, model.vocab, (mb_size, seq), device=device)
    x = torch.randn(mb_size, seq, model.hidden, device=device, dtype=dt)
    probe = torch.randn_like(x)
    e = _fwd_bwd(embed, lambda: (ids,), device, reps, lambda y: (y * probe).sum())
    # One timing per kind of transformer layer: a MoE model's dense layers differ from its MoE layers.
    first_of_kind = {model.is_moe_layer(i): i for i in reversed(range(model.n_layers))}
    times = {kind: _fwd_bwd(layers[1 + i].to(device, dt), lambda: (x.detach().requires_grad_(True),), device, reps,
                            lambda y: (y * probe).sum()) for kind, i in first_of_kind.items()}
    h = _fwd_bwd(head, lambda: (x.detach().requires_grad_(True), ids), device, reps, lambda loss: loss)
    rows = [{"name": "embed", "forward_s": e[0], "backward_s": e[1]}]
    rows += [{"name": f"layer.{i}", "forward_s": times[model.is_moe_layer(i)][0],
              "backward_s": times[model.is_moe_layer(i)][1]} for i in range(model.n_layers)]
    rows.append({"name": "head", "forward_s": h[0], "backward_s": h[1]})
    return rows


def _copy_rate(src: torch.Tensor, dst: torch.Tensor, device: torch.device, reps: int) -> float:
    return src.numel() * src.element_size() / _timer(device, lambda: dst.copy_(src, non_blocking=True), reps)


def profile_links(reps: int) -> dict[str, Any]:
    """Pinned copies on GPU 0 (and GPU 0 -> 1 when there are two); none on a machine without CUDA."""
    if not torch.cuda.is_available():
        return {}
    dev = torch.device("cuda", 0)
    h2d, d2h = [], []
    for size in COPY_SIZES_BYTES:
        host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        gpu = torch.empty(size, dtype=torch.uint8, device=dev)
        h2d.append([size, _copy_rate(host, gpu, dev, reps)])
        d2h.append([size, _copy_rate(gpu, host, dev, reps)])
    size = COPY_SIZES_BYTES[-1]
    host_a, host_b = (torch.empty(size, dtype=torch.uint8, pin_memory=True) for _ in range(2))
    gpu_a, gpu_b = (torch.empty(size, dtype=torch.uint8, device=dev) for _ in range(2))
    s1, s2 = torch.cuda.Stream(dev), torch.cuda.Stream(dev)

    def both() -> None:
        with torch.cuda.stream(s1):
            gpu_a.copy_(host_a, non_blocking=True)
        with torch.cuda.stream(s2):
            host_b.copy_(gpu_b, non_blocking=True)
        torch.cuda.synchronize(dev)
    links: dict[str, Any] = {"h2d_bytes_per_s": h2d[-1][1], "d2h_bytes_per_s": d2h[-1][1],
                             "duplex_bytes_per_s": 2 * size / _timer(dev, both, reps),
                             "h2d_by_size": h2d, "d2h_by_size": d2h}
    if torch.cuda.device_count() > 1:
        other = torch.empty(size, dtype=torch.uint8, device=torch.device("cuda", 1))
        links["p2p_bytes_per_s"] = _copy_rate(gpu_a, other, dev, reps)
    return links


def last_level_cache_bytes() -> int:
    """The largest CPU cache (sysfs); 0 where the kernel does not say."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=0)


# A layer's optimizer state is 16 B per parameter (fp32 master, gradient, m, v). A real step streams
# state many times the cache from DRAM; a profile over a layer that fits the last-level cache measures
# cache bandwidth instead (the first profile's 20M-parameter layer, 320 MB of state beside a 300 MiB L3 on
# the H200 host, ran 2x faster than the same code inside an 8B run). Eight times the cache is streamed.
STATE_BYTES_PER_PARAM = 16
MIN_PROFILE_PARAMS = 20_000_000


def optimizer_profile_params() -> int:
    return max(MIN_PROFILE_PARAMS, 8 * last_level_cache_bytes() // STATE_BYTES_PER_PARAM)


def profile_cpu_optimizer(dtype: str, n_params: int | None = None, reps: int = 3) -> dict[str, float]:
    """rpexec's own host STEP (HostParams.step) over one layer of n_params (default: a state eight times
    the last-level cache), with 1 and with 4 staged gradients, priced as rpsim.costs.cpu_optimizer models
    it: Adam + refresh, the first gradient's widening copy, and each later gradient's summation. Each
    part's rate comes from its own timing inside the step (median_host_step_parts): the first gradient's
    widening from the one-gradient steps, each later gradient's from the four-gradient steps less that,
    Adam + refresh's from both."""
    n_params = n_params or optimizer_profile_params()
    return optimizer_rates_from_times(cpu_optimizer_step_times(dtype, n_params, reps))


def optimizer_rates_from_times(times: dict[str, float]) -> dict[str, float]:
    """The rates of cpu_optimizer_step_times' per-part medians (kept beside them), so a saved raw
    calibration can be priced again without the machine."""
    widen_s = times["accumulate_1_staged_s"]  # the first gradient is a widening copy (rpexec.step_loops)
    per_grad_s = (times["accumulate_4_staged_s"] - widen_s) / 3
    fixed_s = (times["adam_refresh_1_staged_s"] + times["adam_refresh_4_staged_s"]) / 2
    if not (0 < widen_s and 0 < per_grad_s):
        raise RuntimeError(f"CPU optimizer timings are inconsistent (summing one staged gradient {widen_s:.4f} s, "
                           f"four {times['accumulate_4_staged_s']:.4f} s): the machine is too busy to measure; "
                           f"rerun with more --reps")
    return {**times, "adam_params_per_s": times["params"] / fixed_s,
            "grad_accumulate_params_per_s": times["params"] / per_grad_s,
            "grad_widen_params_per_s": times["params"] / widen_s}


STAGING_CHOICES = ("auto", "dma", "cpu")


def stage_gradients(host: HostParams, rep: int, shapes: dict[str, torch.Size], dtype: torch.dtype, n_staged: int,
                    staging: str = "auto") -> None:
    """Stage `n_staged` gradients of `shapes` for HostParams layer 0, iteration `rep`. "dma" (the default
    on CUDA, "auto"): D2H copies from a GPU tensor into the pinned buffers, as a run's OFFLOADs write them;
    "cpu" (the default without CUDA): the CPU fills them. CPU writes leave the last ~300 MiB written in the
    cores' last-level cache, DMA writes reach DRAM through a few of its ways (Intel DDIO), so the probe
    stages as runs do. Measured, it did not matter: on the one-H200 host a llama-1.8b layer's summation
    of 8 staged gradients took 0.985-1.013x as long DMA-staged as CPU-filled, rounds alternating
    (benchmarks/step_staging_ab.py, session 14), while both moved by ±20% between rounds."""
    if staging == "auto":
        staging = "dma" if torch.cuda.is_available() and host.pin else "cpu"
    if staging not in STAGING_CHOICES:
        raise ValueError(f"staging {staging!r}: valid: {', '.join(STAGING_CHOICES)}")
    if staging == "cpu":
        for _ in range(n_staged):
            host.stage_grads(0, rep, {n: host.grad_buffer(shape, dtype).fill_(1e-3) for n, shape in shapes.items()})
        return
    source = torch.full((max(s.numel() for s in shapes.values()),), 1e-3, dtype=dtype, device="cuda")
    stream = torch.cuda.Stream(source.device)
    stream.wait_stream(torch.cuda.current_stream(source.device))
    for _ in range(n_staged):
        grads = {n: host.grad_buffer(shape, dtype) for n, shape in shapes.items()}
        with torch.cuda.stream(stream):
            for buf in grads.values():
                buf.view(-1).copy_(source[:buf.numel()], non_blocking=True)
        stream.synchronize()
        host.stage_grads(0, rep, grads)


def median_host_step_parts(host: HostParams, shapes: dict[str, torch.Size], dtype: torch.dtype, n_staged: int,
                           reps: int, staging: str = "auto") -> tuple[float, float, float]:
    """Medians of HostParams.step over its layer 0 with `n_staged` gradients of `shapes` staged
    (stage_gradients: on CUDA by DMA, as a run stages them), after one warm-up pass (Adam's state, the
    pool, the scratch): the whole step, its summation of the staged gradients, and its AdamW + refresh
    (HostParams.step_parts). Each part timed on its own: a rate taken from differences of whole steps
    also carries the other part's noise (at fewer threads that gave Adam rates 2x apart between
    neighbouring thread counts)."""
    times = []
    for rep in range(reps + 1):
        stage_gradients(host, rep, shapes, dtype, n_staged, staging)
        t = time.perf_counter()
        host.step(0, rep, capture=False)
        *_, accumulate_s, adam_s, refresh_s = host.step_parts[-1]
        times.append((time.perf_counter() - t, accumulate_s, adam_s + refresh_s))
    return tuple(statistics.median(x[i] for x in times[1:]) for i in range(3))  # type: ignore[return-value]


# The cache-resident probe: tensors whose fp32 gradient + scratch (8 B per parameter,
# rpsim.costs.cpu_optimizer.ACCUMULATOR_BYTES_PER_PARAM) fill half the last-level cache, so each stays
# there across its staged gradients while the staged ones and the rest of the step stream; several of
# them, so the layer's Adam state is many times the cache as a real decoder layer's is.
RESIDENT_TENSOR_CACHE_SHARE = 0.5
RESIDENT_PROBE_TENSORS = 6
RESIDENT_STAGED = 8
RESIDENT_ALLOCATIONS = 3  # fresh allocations of the probe's host state; the rate is their median
# The shares of the cache the probe's tensors fill for rpsim's residency curve (rpsim.costs.cpu_optimizer):
# at 48-96% a later pass on the one-H200 host cost 1.0-1.5x what it cost at half (benchmarks/step_allocations.py)
RESIDENT_CURVE_SHARES = (0.25, 0.5, 0.75, 0.95)


def resident_accumulate_rate(dtype: str, reps: int = 3, cache_bytes: int | None = None,
                             allocations: int = RESIDENT_ALLOCATIONS,
                             share: float = RESIDENT_TENSOR_CACHE_SHARE) -> dict[str, float] | None:
    """rpexec's STEP (HostParams.step) over a layer of RESIDENT_PROBE_TENSORS tensors that each fit the
    last-level cache, with 1 and with RESIDENT_STAGED staged gradients. rpsim's model
    (rpsim.costs.cpu_optimizer) streams the first pass of each tensor and keeps the later ones in the
    cache, so the difference of the two summations is RESIDENT_STAGED - 1 resident passes: their rate is the host's
    grad_accumulate_resident_params_per_s. A real layer's tensors fit (llama-1.8b's largest is 201 MB of a
    300 MiB L3) and the synthetic streamed probe's one tensor does not, which is why real layers
    accumulated at 9-15e9 params/s where the streamed probe gave 6.7e9 (benchmarks/step_in_context.py).
    The rate is the median over `allocations` fresh allocations of the layer's whole host state, timed
    one after another: on an H200 host the same layer's STEP moved by ±10-20% over minutes
    (benchmarks/step_allocation_or_time.py: allocations timed side by side run alike), so one timing is
    one draw from that spread. None where the
    cache size is unknown. `share`: of the cache, what each tensor's fp32 gradient + scratch fill."""
    cache = last_level_cache_bytes() if cache_bytes is None else cache_bytes
    if cache <= 0:
        return None
    width = 4096
    rows = max(1, int(cache * share / 8) // width)  # 8 B per parameter: fp32 grad + scratch
    low = DTYPES[dtype]
    draws = []
    for _ in range(max(1, allocations)):
        layer = torch.nn.Sequential(*(torch.nn.Linear(width, rows, bias=False) for _ in range(RESIDENT_PROBE_TENSORS)))
        params = sum(p.numel() for p in layer.parameters())
        host = HostParams([layer], low, pin=torch.cuda.is_available(), lag=1)  # staged as runs stage them
        shapes = {n: p.shape for n, p in layer.named_parameters()}
        (one, sum_one, _), (many, sum_many, _) = (median_host_step_parts(host, shapes, low, n, reps)
                                                  for n in (1, RESIDENT_STAGED))
        if not 0 < sum_one < sum_many:
            raise RuntimeError(f"cache-resident accumulation timings are inconsistent (summing 1 staged gradient "
                               f"{sum_one:.4f} s, {RESIDENT_STAGED}: {sum_many:.4f} s): the machine is too busy to "
                               f"measure; rerun with more --reps")
        draws.append((params * (RESIDENT_STAGED - 1) / (sum_many - sum_one), one, many))
        del host, layer
    rate, one, many = sorted(draws)[len(draws) // 2]  # the median allocation (the upper one of an even count)
    return {"params": params, "tensor_params": rows * width, "cache_bytes": cache, "share": share, "step_1_staged_s": one,
            f"step_{RESIDENT_STAGED}_staged_s": many, "resident_accumulate_params_per_s": rate,
            "allocations_params_per_s": [d[0] for d in draws]}


def cpu_optimizer_step_times(dtype: str, n_params: int, reps: int) -> dict[str, float]:
    """Median seconds of HostParams.step over one layer of n_params with 1 and with 4 staged gradients,
    whole and by part."""
    width = 4096
    layer = torch.nn.Linear(width, max(1, n_params // width), bias=False)
    host = HostParams([layer], DTYPES[dtype], pin=torch.cuda.is_available(), lag=1)  # staged as runs stage them
    shapes = {"weight": layer.weight.shape}
    out: dict[str, float] = {"params": layer.weight.numel()}
    for n in (1, 4):
        step, accumulate, adam_refresh = median_host_step_parts(host, shapes, DTYPES[dtype], n, reps)
        out.update({f"step_{n}_staged_s": step, f"accumulate_{n}_staged_s": accumulate,
                    f"adam_refresh_{n}_staged_s": adam_refresh})
    return out


def reduced_thread_counts(cores: int) -> list[int]:
    """Thread counts below the cores at which the STEP is timed again: a half and three quarters of the
    cores bracket rpexec's asynchronous STEP on one or two GPUs (the cores less one per other lane:
    11 of 16 on a one-H200 host, 22 of 32 on a two-H200 one), which rpsim interpolates between."""
    return sorted({t for t in (cores // 2, 3 * cores // 4) if 1 <= t < cores})


# The layer STEP probe's staged gradients: seven later passes over the layer, as the resident probe's
LAYER_STEP_STAGED = 8


def layer_step_timing(layer: torch.nn.Module, dtype: str, reps: int) -> dict[str, float]:
    """rpexec's STEP (HostParams.step) over `layer`, a transformer layer of the model itself, with 1 and
    with LAYER_STEP_STAGED staged gradients, on torch's current thread count: the seconds of Adam + refresh,
    of the first staged gradient's widening and of one later gradient's summation. Its tensors are the
    model's, so each stays in the cache between its passes as much as it does in a run: calibrate's
    synthetic tensors (equal, at fixed shares of the cache) put a llama-1.8b layer's isolated STEP at
    122 ms where the layer itself took ~138 ms on the one-H200 host (session 13)."""
    low = DTYPES[dtype]
    host = HostParams([layer], low, pin=torch.cuda.is_available(), lag=1)  # staged as runs stage them
    shapes = {n: p.shape for n, p in layer.named_parameters()}
    (_, widen_s, adam_1), (_, sum_s, adam_n) = (median_host_step_parts(host, shapes, low, n, reps)
                                                for n in (1, LAYER_STEP_STAGED))
    later_s = (sum_s - widen_s) / (LAYER_STEP_STAGED - 1)
    if not (widen_s > 0 and later_s > 0):
        raise RuntimeError(f"layer STEP timings are inconsistent (summing 1 staged gradient {widen_s:.4f} s, "
                           f"{LAYER_STEP_STAGED}: {sum_s:.4f} s): the machine is too busy to measure; rerun with more --reps")
    return {"params": sum(p.numel() for p in layer.parameters()), "threads": torch.get_num_threads(),
            "adam_refresh_s": (adam_1 + adam_n) / 2, "widen_s": widen_s, "later_pass_s": later_s,
            "n_staged": LAYER_STEP_STAGED}


def host_decoder_layer(model: ModelSpec, index: int) -> torch.nn.Module:
    """Decoder layer `index` of `model` on the CPU, its weights normal(0, 0.02): a STEP probe's layer (the
    STEP's speed must not depend on the values, so no uninitialised memory and its denormals)."""
    with torch.device("meta"):
        layer = DecoderLayer(model, index)
    layer = layer.to_empty(device="cpu")
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.02)
    return layer


def profile_layer_steps(model: ModelSpec, dtype: str, reps: int = 3) -> list[dict[str, float]]:
    """layer_step_timing for one transformer layer of each kind (a MoE model's dense and MoE layers), at
    torch's thread count and at reduced_thread_counts (rpexec's asynchronous STEP runs on fewer; rpsim
    interpolates between them, rpsim.costs.cpu_optimizer)."""
    first_of_kind = {model.is_moe_layer(i): i for i in reversed(range(model.n_layers))}
    all_threads = torch.get_num_threads()
    counts = [all_threads, *(t for t in reversed(reduced_thread_counts(os.cpu_count() or 1)) if t < all_threads)]
    out = []
    for index in sorted(first_of_kind.values()):
        layer = host_decoder_layer(model, index)
        for threads in counts:
            torch.set_num_threads(threads)
            try:
                out.append({"layer": f"layer.{index}", **layer_step_timing(layer, dtype, reps)})
            finally:
                torch.set_num_threads(all_threads)
        del layer
    return out


def make_profile(model: ModelSpec, seq: int, mb_size: int, dtype: str, device: str, reps: int = 5,
                 host_step_only: bool = False) -> dict[str, Any]:
    """The profile: layer times, link rates and the host STEP; `host_step_only`: the host STEP alone (no
    `layers`, no `links`), for use beside a calibrated machine file (rpsim.costs.profile)."""
    dev = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")
    name = torch.cuda.get_device_name(dev) if device == "cuda" else "cpu"
    cpu = {**{k: v for k, v in profile_cpu_optimizer(dtype).items()
              if k in ("adam_params_per_s", "grad_accumulate_params_per_s", "grad_widen_params_per_s")},
           "layer_steps": profile_layer_steps(model, dtype, min(reps, 3))}
    conditions = {"device": name, "dtype": dtype, "torch": torch.__version__}
    if host_step_only:
        return {"format": "rpsim.profile", "version": 1, "conditions": conditions, "cpu": cpu}
    return {"format": "rpsim.profile", "version": 1,
            "conditions": {**conditions, "mb_tokens": seq * mb_size, "seq_len": seq, "mb_size": mb_size},
            "layers": profile_layers(model, seq, mb_size, dtype, dev, reps), "links": profile_links(reps), "cpu": cpu}
