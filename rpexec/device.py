"""One execution device: a CUDA GPU with a stream per lane, or a CPU stand-in whose lanes are threads.
Owns the device-side tensor store: job weights, activations and gradients in flight, kept graphs."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class DeviceState:
    index: int  # plan GPU index
    device: torch.device
    streams: dict[str, Any] = field(default_factory=dict)  # lane -> torch.cuda.Stream (CUDA only)
    weights: dict[tuple, dict[str, torch.Tensor]] = field(default_factory=dict)  # (job key, layer) -> params
    tensors: dict[tuple, torch.Tensor] = field(default_factory=dict)  # ('act'|'grad', boundary, mb, it)
    pending_grads: dict[tuple, dict[str, torch.Tensor]] = field(default_factory=dict)  # (job key, layer)
    graphs: dict[tuple, tuple[torch.Tensor | None, torch.Tensor]] = field(default_factory=dict)
    # (stage, mb, it) -> what an I left for its W: per segment (output, its gradient, layer range)
    split: dict[tuple, list] = field(default_factory=dict)
    resident: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # layer -> params
    resident_master: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    resident_optim: dict[int, torch.optim.Optimizer] = field(default_factory=dict)
    skeleton: list[Any] = field(default_factory=list)  # this device's modules for functional_call
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def put(self, key: tuple, t: torch.Tensor) -> None:
        with self.lock:
            self.tensors[key] = t

    def take(self, key: tuple, keep: bool = False) -> torch.Tensor:
        with self.lock:
            if key not in self.tensors:
                raise RuntimeError(f"tensor {key} is not on device {self.index} (the plan moved no such data here)")
            t = self.tensors[key] if keep else self.tensors.pop(key)
        if self.is_cuda:
            # Made on another lane's stream: keep the allocator from reusing it while this stream reads it.
            t.record_stream(torch.cuda.current_stream(self.device))
        return t
