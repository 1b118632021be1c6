"""The interpreter: one thread per lane runs its actions in order. Before an action it waits, on the
host, until every dependency has been issued (threading events), then makes its CUDA stream wait on the
dependencies' CUDA events (or, on the host CPU's optimizer lane, synchronises them); it times the action
with CUDA events (perf_counter on CPU). The dependency edges are rpsim's (one rule, rpsim.ir.deps), plus
rpexec.copy_order's, which make the copy engines serve activations first as rpsim's link priority does.
An exception on any lane aborts all lanes promptly and names the GPU, lane and action; a watchdog turns
a wait longer than `watchdog_s` into an error naming the waiting action and what it waits for."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import torch

from rpexec import handlers, split_backward, transfers
from rpexec.errors import ExecError, Interrupted
from rpexec.issue_times import host_waits_for_end
from rpsim.ir import CPU, Action, Plan

Node = tuple[int, Action]
HANDLERS: dict[str, Callable[[handlers.Context, int, Action], int | None]] = {
    "F": handlers.forward, "B": handlers.backward, "FB": handlers.fused, "I": split_backward.backward_input,
    "W": split_backward.backward_weight, "LOAD": transfers.load,
    "FREE": transfers.free, "OFFLOAD": transfers.offload, "ACT_OUT": transfers.act_out,
    "ACT_IN": transfers.act_in, "SEND": transfers.send, "RECV": transfers.recv, "STEP": transfers.step,
}


FAULT_MODES = ("raise", "hang", "oom")


@dataclass
class Fault:
    """A fault injected for tests: at (gpu, lane, action) raise, hang or run out of memory."""

    gpu: int
    lane: str
    action: str
    mode: str  # raise | hang | oom

    @classmethod
    def parse(cls, text: str) -> Fault:
        from rpsim.errors import SpecError
        parts = text.split(":")
        if len(parts) != 4 or not parts[0].isdigit() or parts[3] not in FAULT_MODES:
            raise SpecError(f"--inject-fault {text!r}: expected GPU:LANE:ACTION:MODE, e.g. 0:compute:0F0:raise, "
                            f"with MODE one of {', '.join(FAULT_MODES)}")
        gpu, lane, action, mode = parts
        return cls(int(gpu), lane, action, mode)


@dataclass
class Timing:
    start: Any  # CUDA event, or perf_counter seconds
    end: Any
    n_bytes: float = 0.0


@dataclass
class Interpreter:
    plan: Plan
    graph: nx.DiGraph
    ctx: handlers.Context
    watchdog_s: float = 300.0
    fault: Fault | None = None
    issued: dict[Node, threading.Event] = field(default_factory=dict)
    timing: dict[Node, Timing] = field(default_factory=dict)
    abort: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)
    lane_of: dict[Node, str] = field(default_factory=dict)
    stop: threading.Event | None = None  # set by the CLI's SIGINT handler
    blocking_sync: bool = False  # True: host waits on end events sleep instead of spinning (A/B option)
    t0_host: float = 0.0
    t0_events: dict[int, Any] = field(default_factory=dict)

    def run(self) -> None:
        self.t0_host = time.perf_counter()
        self.t0_events = {}
        for g, dev in self.ctx.devices.items():
            if dev.is_cuda:
                torch.cuda.synchronize(dev.device)
                ev = torch.cuda.Event(enable_timing=True)
                ev.record(torch.cuda.current_stream(dev.device))
                self.t0_events[g] = ev
        self.t0_host = time.perf_counter()
        self.issued = {n: threading.Event() for n in self.graph.nodes}
        self.lane_of = {(gpu, a): lane for (gpu, lane), actions in self.plan.lanes.items() for a in actions}
        threads = [threading.Thread(target=self._lane, args=(gpu, lane, actions), daemon=True,
                                    name=f"gpu{gpu}/{lane}")
                   for (gpu, lane), actions in sorted(self.plan.lanes.items())]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.05)
                    if self.stop is not None and self.stop.is_set():
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.abort.set()
            for t in threads:
                t.join(2.0)
            raise Interrupted("interrupted (Ctrl-C); all lanes stopped") from None
        if self.errors:
            raise self.errors[0]

    def _lane(self, gpu: int, lane: str, actions: tuple[Action, ...]) -> None:
        dev = self.ctx.devices.get(gpu)
        if dev is not None and dev.is_cuda:
            torch.cuda.set_device(dev.device)  # autograd and cuBLAS use the thread's current device
        for a in actions:
            node = (gpu, a)
            try:
                self._wait(node)
                if self.abort.is_set():
                    return
                self._execute(gpu, lane, a)
            except BaseException as e:  # noqa: BLE001 - any failure must stop every lane
                if not self.abort.is_set():
                    self.errors.append(_describe(e, gpu, lane, a))
                self.abort.set()
                return
            self.issued[node].set()

    def _wait(self, node: Node) -> None:
        preds = [p for p in self.graph.predecessors(node) if self.graph.edges[p, node].get("why") != "lane"]
        began = time.monotonic()
        for p in preds:
            while not self.issued[p].wait(0.05):
                if self.abort.is_set():
                    return
                if time.monotonic() - began > self.watchdog_s:
                    raise ExecError(f"watchdog: gpu {_dev(node[0])}: {node[1]} waited {self.watchdog_s:.0f} s "
                                    f"for {p[1]} on gpu {_dev(p[0])}, which never ran")
        self._device_wait(node, preds)

    def _device_wait(self, node: Node, preds: list[Node]) -> None:
        gpu, _ = node
        lane = self.lane_of[node]
        for p in preds:
            t = self.timing.get(p)
            if t is None or not hasattr(t.end, "synchronize"):
                continue  # a host action: done when issued
            if host_waits_for_end(node, lane, self.graph.edges[p, node].get("why", "")):
                # Memory windows bound what is allocated, and a transfer allocates when it is issued:
                # a LOAD issued as soon as its FREE was *issued* held the next stages' weights while the
                # GPU still computed with the last ones (run 1's peaks were 2x rpsim's). So transfer
                # lanes, which have their own threads, wait on the host until the window really opened.
                t.end.synchronize()
            else:
                self.ctx.devices[gpu].streams[lane].wait_event(t.end)

    def _execute(self, gpu: int, lane: str, a: Action) -> None:
        if self.fault and (self.fault.gpu, self.fault.lane, self.fault.action) == (gpu, lane, str(a)):
            _inject(self.fault.mode, self.abort)
        handler = HANDLERS.get(a.kind)
        if handler is None:
            raise ExecError(f"rpexec cannot run {a.kind} actions")
        dev = self.ctx.devices.get(gpu)
        if dev is not None and dev.is_cuda:
            stream = dev.streams[lane]
            with torch.cuda.device(dev.device), torch.cuda.stream(stream):
                start = torch.cuda.Event(enable_timing=True)
                start.record(stream)
                moved = handler(self.ctx, gpu, a)
                # blocking_sync: a host wait on it (transfer lanes' memory windows, the optimizer lane)
                # sleeps instead of spinning a core the CPU optimizer's OpenMP team could use. Measured
                # on 2x H200 (benchmarks/notes-rpexec.md): no difference beyond run-to-run noise, so the
                # default stays CUDA's (spinning), the configuration every reported run used.
                end = torch.cuda.Event(enable_timing=True, blocking=self.blocking_sync)
                end.record(stream)
        else:
            start = time.perf_counter()
            moved = handler(self.ctx, gpu, a)
            end = time.perf_counter()
        self.timing[(gpu, a)] = Timing(start, end, float(moved or 0))


def _inject(mode: str, abort: threading.Event) -> None:
    if mode == "raise":
        raise RuntimeError("injected fault")
    if mode == "oom":
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
    if mode == "hang":
        while not abort.wait(0.05):
            pass
        return
    raise ExecError(f"unknown fault mode {mode!r}; valid choices: raise, hang, oom")


def _dev(gpu: int) -> str:
    return "cpu(optimizer)" if gpu == CPU else str(gpu)


def _describe(e: BaseException, gpu: int, lane: str, a: Action) -> BaseException:
    where = f"gpu {_dev(gpu)}, lane {lane}, action {a}"
    if isinstance(e, torch.OutOfMemoryError):
        return ExecError(f"out of GPU memory at {where}: {str(e).splitlines()[0]}")
    if isinstance(e, ExecError) and str(e).startswith("watchdog"):
        return e
    return ExecError(f"{where} failed: {type(e).__name__}: {e}")
