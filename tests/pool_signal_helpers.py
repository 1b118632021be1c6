"""A command with worker processes, signalled while its workers are busy: how long they took to stop, and
what the command printed and returned (`rpsim search` and `rpsim compare` tests)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(entry))
    return kids


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class Stopped:
    n_workers: int
    workers_left: int  # still alive after the command ended
    stop_s: float  # from the signal until no worker was alive (10 s at most)
    returncode: int
    out: bytes
    err: bytes


def signal_when_busy(cmd: list[str], signum: int) -> Stopped:
    """Run `cmd` from the repository root, wait for two workers, give them 1 s to take tasks, send `signum`."""
    # As a command started from a terminal: a suite run as a background job (`cmd &` in a script) has
    # SIGINT ignored, which its children inherit and Python then keeps ignoring.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509 - one disposition, no locks
    deadline = time.monotonic() + 60
    while len(children(proc.pid)) < 2 and time.monotonic() < deadline:  # the pool's workers are up
        time.sleep(0.05)
    workers = children(proc.pid)
    if len(workers) >= 2:
        time.sleep(1.0)  # let them take tasks
    sent = time.monotonic()
    proc.send_signal(signum)
    while any(alive(w) for w in workers) and time.monotonic() - sent < 10:
        time.sleep(0.02)
    stop_s = time.monotonic() - sent
    out, err = proc.communicate(timeout=30)
    return Stopped(len(workers), sum(alive(w) for w in workers), stop_s, proc.returncode, out, err)
