"""Warm-up of the compute kernels: before iteration 0, each device runs every kind of layer the model has
once forward and once forward-and-backward, at the plan's microbatch shape, on its compute stream.

Why: the first kernels a process launches on a GPU pay one-off costs that are not the plan's: CUDA loads
each kernel's module lazily on its first launch, cuBLAS creates a handle and a workspace for the first
GEMM of a stream, and the GEMM and attention libraries pick their algorithms per shape on first use.
Measured on 2x H200 (2.8B benchmark plan, session 9 trace): iteration 0's first forward took 1.22 s
against 0.047 s steady, the first fused last stage (chunked loss and backward) 2.10 s against 0.093 s;
iteration 0 took 2.18x a steady iteration, against the 1.12x the pipeline's own fill explains
(rpsim's prediction for the same plan).

What it touches: a compute-dtype copy of one representative of each distinct layer the device's compute
lane runs (embedding, each kind of decoder layer, head), made on the device and dropped afterwards; zero
token ids, or a zero hidden state where the device runs no embedding. A GPU that holds resident stages
may have no room for the copies: an out-of-memory in the warm-up skips that device's warm-up with a
warning (the run itself is unchanged). The plan's
weights, gradients, optimizer state and random state are not touched, so losses and gradients are
exactly those of a run without it. Each device's thread ends when its warm-up does, which hands its
cuBLAS handle back to torch's per-device pool for the lane threads. The peak-memory counters are reset
afterwards: the warm-up is not the plan's memory."""
from __future__ import annotations

import threading
import time
import warnings
from contextlib import nullcontext

import torch
from torch import nn
from torch.func import functional_call

from rpexec.device import DeviceState
from rpexec.hostparams import HostParams
from rpsim.ir import Plan


def representative_layers(layers: list[nn.Module], among: set[int] | None = None) -> list[int]:
    """The first layer of each distinct kind (module class and parameter shapes), in layer order, among
    the given layer indices (default: all)."""
    seen: set[tuple] = set()
    picks = []
    for index, layer in enumerate(layers):
        if among is not None and index not in among:
            continue
        kind = (type(layer).__name__, tuple((n, tuple(p.shape)) for n, p in layer.named_parameters()))
        if kind not in seen:
            seen.add(kind)
            picks.append(index)
    return picks


def layers_run_on(plan: Plan, gpu: int) -> set[int]:
    """Every layer a compute action of this GPU runs."""
    out: set[int] = set()
    for a in plan.lanes.get((gpu, "compute"), ()):
        if a.is_compute:
            lo, hi = plan.partition.ranges(a.partition_phase)[a.stage]  # type: ignore[index]
            out.update(range(lo, hi))
    return out


def _warm_device(dev: DeviceState, host: HostParams, picks: list[int], batch_shape: tuple[int, int],
                 hidden: int) -> None:
    stream = torch.cuda.stream(dev.streams["compute"]) if dev.is_cuda and "compute" in dev.streams else nullcontext()
    last = len(host.layers) - 1
    with stream:
        weights = {i: {n: t.detach().to(dev.device, copy=True).requires_grad_(t.is_floating_point())
                       for n, t in host.copies[i][0].items()} for i in picks}
        ids = torch.zeros(batch_shape, dtype=torch.long, device=dev.device)
        start = ids if picks[0] == 0 else torch.zeros((*batch_shape, hidden), dtype=host.dtype, device=dev.device)

        def run() -> torch.Tensor:
            x = start
            for i in picks:
                args = (x, ids) if i == last else (x,)  # the head takes the labels: zeros as well
                x = functional_call(dev.skeleton[i], weights[i], args)
            return x if x.dim() == 0 else x.float().mean()  # a scalar to backpropagate from

        with torch.no_grad():  # a forward as F runs it (no graph)
            run()
        with torch.enable_grad():  # the recompute and backward of B and FB
            run().backward()
        del weights
        if dev.is_cuda:
            torch.cuda.synchronize(dev.device)


def warm_kernels(plan: Plan, devices: dict[int, DeviceState], host: HostParams, batch_shape: tuple[int, int],
                 hidden: int) -> float:
    """Run the warm-up on every device at once, one thread each; seconds taken. Errors other than an
    out-of-memory propagate."""
    t = time.perf_counter()
    errors: list[BaseException] = []

    def work(gpu: int, dev: DeviceState) -> None:
        picks = representative_layers(host.layers, layers_run_on(plan, gpu))
        if not picks:
            return
        try:
            _warm_device(dev, host, picks, batch_shape, hidden)
        except torch.OutOfMemoryError:
            warnings.warn(f"rpexec: kernel warm-up skipped on GPU {gpu}: no room beside its resident state",
                          stacklevel=1)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(g, dev), name=f"warm-gpu{g}") for g, dev in devices.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    for dev in devices.values():
        if dev.is_cuda:
            torch.cuda.reset_peak_memory_stats(dev.device)
    return time.perf_counter() - t
