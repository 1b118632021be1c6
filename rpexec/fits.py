"""Refuse a plan the machine cannot hold, before building anything: rpsim's predicted peak host and GPU
memory for the plan against what this host (and each GPU) has. A plan that needed 527 GiB once started
on a 23 GiB host and was killed by the kernel 73 s later; this check turns that into an immediate exit 1."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

from rpsim.errors import Infeasible
from rpsim.ir import Plan

GiB = 2**30


@dataclass(frozen=True)
class Peaks:
    host_bytes: float
    gpu_bytes: tuple[float, ...]


def predicted_peaks(plan: Plan) -> Peaks:
    """rpsim's prediction for this plan. The profile is left out: rpexec builds the model from the plan's
    model spec, so the model's own parameter and activation bytes are the ones it allocates, and memory
    does not depend on a profile's times."""
    from rpsim.scenario import scenario_from_setup
    from rpsim.sim.simulate import simulate
    sc = scenario_from_setup({**plan.setup, "profile": None}, n_gpus=plan.n_gpus)
    sim_plan = replace(plan, setup={**plan.setup, "profile": None})
    m = simulate(sim_plan, sc).metrics
    return Peaks(float(m["peak_host_mem_bytes"]), tuple(float(x) for x in m["peak_gpu_mem_bytes"]))


def available_host_bytes() -> tuple[float, str]:
    """Memory a new process can take without swapping: MemAvailable (Linux >= 3.14), else all physical
    memory from sysconf."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024, "available (MemAvailable in /proc/meminfo)"
    except OSError:
        pass
    return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "physical (sysconf)"


def resident_bytes() -> float:
    """This process's resident memory now (VmRSS): the interpreter, torch and, once initialised, the CUDA
    runtime, which the run keeps beside the model's host state and rpsim's prediction does not count."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


def check_fits(peaks: Peaks, device: str, host_have: tuple[float, str], gpu_have: list[float],
               process_bytes: float = 0.0) -> None:
    """Infeasible naming both numbers. On --device cpu each simulated GPU's memory is host memory too.
    `process_bytes`: what the process already holds (resident_bytes), on top of the plan's state."""
    need = peaks.host_bytes + (sum(peaks.gpu_bytes) if device == "cpu" else 0.0) + process_bytes
    have, what = host_have
    if need > have:
        on_cpu = f" plus {len(peaks.gpu_bytes)} CPU-simulated GPUs" if device == "cpu" else ""
        runtime = f" plus {process_bytes / GiB:.1f} GiB this process holds already" if process_bytes else ""
        raise Infeasible(f"the plan needs {need / GiB:.1f} GiB of host memory (rpsim's predicted host peak"
                         f"{on_cpu}{runtime}); this machine has {have / GiB:.1f} GiB {what}; "
                         "--force runs it anyway")
    for gpu, (want, cap) in enumerate(zip(peaks.gpu_bytes, gpu_have)):
        if want > cap:
            raise Infeasible(f"the plan needs {want / GiB:.1f} GiB on GPU {gpu} by rpsim's prediction; "
                             f"that GPU has {cap / GiB:.1f} GiB; --force runs it anyway")


def check_machine_memory(plan: Plan, device: str) -> None:
    gpu_have: list[float] = []
    if device == "cuda":
        import torch
        gpu_have = [float(torch.cuda.get_device_properties(g).total_memory) for g in range(plan.n_gpus)]
    # After the CUDA runtime started (get_device_properties above), so its host memory is in the count.
    check_fits(predicted_peaks(plan), device, available_host_bytes(), gpu_have, resident_bytes())
