"""GPU ONLY (2 x H200): what rpexec's measured peak GPU memory is made of, for the e03 runs whose peak
rpsim missed by more than 10% in session 4's data (issue 14, item 4; tests/test_e03_memory.py):

    python3 benchmarks/memory_timeline_probe.py --out "$OUT"        # about 100 s on 2 x H200

It replays the committed plans of experiments/data/e03 with rpexec's run_plan, as e03's --measure does
(bf16, blocks of the plan's iterations), and records per run:
- the allocated bytes on each GPU before the run (after reset_peak_memory_stats: what earlier runs of the
  same process left allocated counts in e03's measured peak), the run's max_memory_allocated, and what is
  still allocated after it (what the next run of e03 started with); at the "clear" steps, what all earlier
  runs left: in all, after gc.collect, and after freeing cuBLAS's per-(handle, stream) workspaces;
- for every action, on its lane's host thread: perf_counter and torch.cuda.memory_allocated before and
  after the handler (host issue time: the caching allocator counts a tensor when the host allocates it and
  uncounts it when the host drops it, not when the GPU uses it);
- with torch.cuda.memory._record_memory_history, on the runs marked so below: the live blocks at each
  GPU's allocated peak, grouped by the allocating Python frame, stream (lane) and size, with the actions
  each host thread was running at that moment (the snapshot itself is not kept: it is large).

Runs, in this order, in one process:
  1. llama-1.8b roundpipe-sync on 1 GPU, 1 block, with history (its host pools' warm-up alone takes
     20 s); then cuBLAS's workspaces are freed;
  2. llama-0.7b on 1 GPU: gpipe, 1f1b, interleaved, roundpipe-sync, roundpipe; on 2 GPUs: gpipe, 1f1b,
     interleaved, 1 block each, no history: e03's order before its 2-GPU roundpipe-sync run, so that run
     starts with what they left allocated, as in e03 (whose runs shared one process);
  3. llama-0.7b roundpipe-sync on 2 GPUs, 4 blocks as in e03, with history; cuBLAS workspaces freed;
  4. llama-2.8b roundpipe-sync on 1 GPU, 1 block, with history, if time is left (26 s of warm-up).
Each run writes $OUT/<run>.json (with its GPU-timed trace) as soon as it ends, and summary.json; a run is
not started once its share of --budget-s has passed."""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

E03 = ROOT / "experiments" / "data" / "e03"
# (run, blocks, with history, start it only before this fraction of --budget-s has passed)
SEQUENCE = [("llama-1.8b-roundpipe-sync-1gpu", 1, True, 0.30), ("clear", 0, False, 1.0),
            ("llama-0.7b-gpipe-1gpu", 1, False, 0.55), ("llama-0.7b-1f1b-1gpu", 1, False, 0.55),
            ("llama-0.7b-interleaved-1gpu", 1, False, 0.55), ("llama-0.7b-roundpipe-sync-1gpu", 1, False, 0.55),
            ("llama-0.7b-roundpipe-1gpu", 1, False, 0.55), ("llama-0.7b-gpipe-2gpu", 1, False, 0.6),
            ("llama-0.7b-1f1b-2gpu", 1, False, 0.6), ("llama-0.7b-interleaved-2gpu", 1, False, 0.6),
            ("llama-0.7b-roundpipe-sync-2gpu", 4, True, 0.75), ("clear", 0, False, 1.0),
            ("llama-2.8b-roundpipe-sync-1gpu", 1, True, 0.62)]
GiB = 2**30


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


class ActionLog:
    """Wraps rpexec's handlers: host time and allocated bytes of the action's GPU around each one."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.t0 = time.perf_counter()

    def install(self) -> None:
        import torch

        from rpexec import runtime
        for kind, fn in list(runtime.HANDLERS.items()):
            def wrapped(ctx, gpu, a, _fn=fn):
                dev = ctx.devices.get(gpu)
                cuda = dev is not None and dev.is_cuda
                m0 = torch.cuda.memory_allocated(dev.device) if cuda else 0
                t0 = time.perf_counter()
                out = _fn(ctx, gpu, a)
                t1 = time.perf_counter()
                m1 = torch.cuda.memory_allocated(dev.device) if cuda else 0
                self.rows.append((gpu, threading.current_thread().name, str(a), t0 - self.t0, t1 - self.t0, m0, m1))
                return out
            runtime.HANDLERS[kind] = wrapped

    def reset(self) -> None:
        self.rows = []
        self.t0 = time.perf_counter()


def capture_devices():
    """rpexec.session.make_devices, keeping its result (the lanes' streams, to name the snapshot's)."""
    from rpexec import session
    kept: dict = {}
    original = session.make_devices

    def make(plan, opts):
        devices = original(plan, opts)
        kept.clear()
        kept.update(devices)
        return devices
    session.make_devices = make
    return kept


def stream_names(devices) -> dict[int, str]:
    names = {}
    for g, dev in devices.items():
        for lane, s in dev.streams.items():
            names[int(s.cuda_stream)] = f"gpu{g}/{lane}"
    return names


def peak_composition(snapshot: dict, device: int, baseline: float, streams: dict[int, str],
                     log_rows: list[tuple], epoch_of_t0: float) -> dict:
    """Replays one device's allocator trace (alloc +, free_requested -: the allocated-bytes statistic
    changes at free_requested, before a record_stream'd block is reusable) to its highest level and lists
    the live blocks there."""
    traces = snapshot.get("device_traces", [])
    if device >= len(traces):
        return {"error": f"no trace for device {device}"}
    live: dict[int, dict] = {}
    level = best = 0.0
    best_live: dict[int, dict] = {}
    best_time_us = None
    for e in traces[device]:
        act = e.get("action")
        if act == "alloc":
            live[e["addr"]] = e
            level += e["size"]
            if level > best:
                best, best_live, best_time_us = level, dict(live), e.get("time_us")
        elif act == "free_requested":
            if e["addr"] in live:
                level -= live.pop(e["addr"])["size"]
    groups: dict[tuple, list] = defaultdict(lambda: [0, 0])
    for e in best_live.values():
        frames = e.get("frames") or []
        own = next((f"{Path(f['filename']).name}:{f['line']}:{f['name']}" for f in frames
                    if "/rpexec/" in f["filename"] or "/rpsim/" in f["filename"]), None)
        inner = f"{Path(frames[0]['filename']).name}:{frames[0]['line']}:{frames[0]['name']}" if frames else "no python frame (autograd engine or C++)"
        key = (own or "-", inner, streams.get(e.get("stream"), str(e.get("stream"))), e["size"])
        groups[key][0] += 1
        groups[key][1] += e["size"]
    rows = sorted(([*k, n, b / GiB] for k, (n, b) in groups.items()), key=lambda r: -r[-1])
    running = []
    if best_time_us is not None:
        t = best_time_us / 1e6 - epoch_of_t0
        running = [r[:5] for r in log_rows if r[3] <= t <= r[4] + 0.002]
        running.append(["peak at host s", t])
    return {"traced_peak_gib": best / GiB, "baseline_gib": baseline / GiB, "peak_gib": (best + baseline) / GiB,
            "live_at_peak": [["rpexec frame", "innermost frame", "stream", "block bytes", "count", "GiB"]] + rows,
            "host_actions_at_peak": running}


def run_one(name: str, blocks: int, history: bool, log: ActionLog, devices: dict, out: Path) -> dict:
    import torch

    from experiments.e03_sim_vs_real import SEQ, model, training
    from rpexec.session import RunOptions, run_plan
    from rpsim.ir.planio import load_plan
    plan = load_plan(E03 / f"{name}-plan.json")
    n = torch.cuda.device_count()
    for d in range(n):  # as e03 --measure: no gc.collect() between runs
        torch.cuda.reset_peak_memory_stats(d)
    baseline = [float(torch.cuda.memory_allocated(d)) for d in range(n)]
    if history:
        torch.cuda.memory._record_memory_history(enabled="all", context="alloc", stacks="python",
                                                 max_entries=2_000_000, clear_history=True)
    log.reset()
    epoch_of_t0 = time.time() - (time.perf_counter() - log.t0)
    began = time.perf_counter()
    result = run_plan(plan, model(plan.setup["model"]["name"]), SEQ, training().mb_size,
                      RunOptions(device="cuda", dtype="bf16", blocks=blocks))
    trace = result.trace.to_json()
    wall = time.perf_counter() - began
    peaks = [float(torch.cuda.max_memory_allocated(d)) for d in range(n)]
    snapshot = torch.cuda.memory._snapshot() if history else None
    if history:
        torch.cuda.memory._record_memory_history(enabled=None)
    del result
    after = [float(torch.cuda.memory_allocated(d)) for d in range(n)]  # what e03's next run started with
    measured = json.loads((E03 / f"{name}-trace.json").read_text())["meta"]["peak_gpu_mem_bytes"]
    rec = {"run": name, "blocks": blocks, "wall_s": wall, "baseline_gib": [b / GiB for b in baseline],
           "peak_gib": [p / GiB for p in peaks], "peak_minus_baseline_gib": [(p - b) / GiB for p, b in zip(peaks, baseline)],
           "e03_measured_peak_gib": [m / GiB for m in measured], "left_allocated_after_gib": [a / GiB for a in after],
           "gpu_trace": trace,
           "actions": [["gpu", "thread", "action", "host_start_s", "host_end_s", "alloc_before", "alloc_after"]]
           + [list(r) for r in log.rows]}
    if snapshot is not None:
        names = stream_names(devices)
        rec["peak_composition"] = {g: peak_composition(snapshot, g, baseline[g], names, log.rows, epoch_of_t0)
                                   for g in range(plan.n_gpus)}
        rec["snapshot_entries"] = [len(t) for t in snapshot.get("device_traces", [])]
    write_json(out / f"{name}.json", rec)
    return rec


def clear_workspaces(out: Path, step: int) -> dict:
    """What the runs so far left allocated: in all, after gc.collect() (what only reference cycles
    held), and after freeing cuBLAS's workspaces (one per handle and stream that ran a GEMM)."""
    import torch
    n = torch.cuda.device_count()

    def allocated() -> list[float]:
        return [float(torch.cuda.memory_allocated(d)) / GiB for d in range(n)]
    rec: dict = {"step": step, "left_allocated_gib": allocated()}
    gc.collect()
    rec["after_gc_collect_gib"] = allocated()
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    rec["after_clearing_cublas_workspaces_gib"] = allocated()
    rec["cleared"] = clear is not None
    write_json(out / f"clear-{step}.json", rec)
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (on the device machine: $OUT)")
    p.add_argument("--budget-s", type=float, default=95.0, help="seconds; each run starts only before its share of it")
    p.add_argument("--skip-sequence", action="store_true", help="only the two runs with history")
    a = p.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("memory_timeline_probe: needs CUDA (run it on the device machine)", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.cuda.init()
    started = time.perf_counter()
    log = ActionLog()
    log.install()
    devices = capture_devices()
    summary = []
    for step, (name, blocks, history, start_before) in enumerate(SEQUENCE):
        if a.skip_sequence and not history and name != "clear":
            continue
        if time.perf_counter() - started > start_before * a.budget_s:
            summary.append({"run": name, "skipped": "over --budget-s"})
            continue
        if name == "clear":
            summary.append(clear_workspaces(out, step))
            continue
        if torch.cuda.device_count() < int(name.rsplit("-", 1)[1].removesuffix("gpu")):
            summary.append({"run": name, "skipped": "not enough GPUs"})
            continue
        try:
            rec = run_one(name, blocks, history, log, devices, out)
            summary.append({k: v for k, v in rec.items() if k not in ("actions", "peak_composition", "gpu_trace")})
            print(json.dumps(summary[-1]), flush=True)
            if "peak_composition" in rec:
                for g, comp in rec["peak_composition"].items():
                    print(f"  gpu{g}: peak {comp.get('peak_gib', 0):.3f} GiB; largest live groups:", flush=True)
                    for row in comp.get("live_at_peak", [])[1:12]:
                        print("   ", row, flush=True)
        except Exception as e:  # noqa: BLE001 - record the failure, keep the other runs
            summary.append({"run": name, "error": f"{type(e).__name__}: {e}"})
            print(f"FAILED {name}: {type(e).__name__}: {e}", flush=True)
        write_json(out / "summary.json", {"elapsed_s": time.perf_counter() - started, "runs": summary})
    write_json(out / "summary.json", {"elapsed_s": time.perf_counter() - started, "runs": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
