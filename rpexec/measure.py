"""Measured trace events in rpsim's schema, from the interpreter's timings: CUDA event pairs relative to
a per-GPU start event recorded right after a device synchronisation, host clocks for CPU lanes."""
from __future__ import annotations

import torch

from rpexec.device import DeviceState
from rpsim.sim.trace import TraceEvent


def measured_events(interp, devices: dict[int, DeviceState]) -> list[TraceEvent]:
    for dev in devices.values():
        if dev.is_cuda:
            torch.cuda.synchronize(dev.device)
    out = []
    for (gpu, lane), actions in interp.plan.lanes.items():
        for a in actions:
            t = interp.timing.get((gpu, a))
            if t is None:
                continue
            if hasattr(t.start, "elapsed_time"):
                t0 = interp.t0_events[gpu]
                start, end = t0.elapsed_time(t.start) / 1e3, t0.elapsed_time(t.end) / 1e3
            else:
                start, end = t.start - interp.t0_host, t.end - interp.t0_host
            out.append(TraceEvent(gpu=gpu, lane=lane, action=str(a), kind=a.kind, stage=a.stage, mb=a.mb, it=a.it,
                                  start_s=start, end_s=end, bytes=t.n_bytes))
    return out
