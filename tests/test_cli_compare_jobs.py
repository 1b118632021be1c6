"""`rpsim compare --jobs`: schedules simulated on worker processes give the rows of one process, byte for
byte; a bad count is refused (exit 2); Ctrl-C (130) and SIGTERM (143) stop every worker at once, without a
traceback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from rpsim.cli.main import main
from tests.test_cli_errors_runs import ROOT, _alive, _children

SMALL = ["compare", "--model", "qwen3-1.7b", "--gpus", "4090x4", "--global-batch", "16",
         "--schedules", "roundpipe,1f1b,gpipe,zb-h1", "--format", "json"]


def _stdout(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


def test_rows_on_two_workers_are_the_rows_of_one_process(capsys):
    alone = _stdout(capsys, [*SMALL, "--jobs", "1"])
    pooled = _stdout(capsys, [*SMALL, "--jobs", "2"])
    assert alone[0] == 0 and '"schedule": "roundpipe"' in alone[1]
    assert pooled == alone


def test_a_job_count_below_one_is_refused(capsys):
    assert main([*SMALL, "--jobs", "0"]) == 2
    assert "--jobs must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_compare_stops_every_worker_on_a_signal(signum, code):
    # RoundPipe of Llama-70B with 64 microbatches on 8 H100s simulates for ~15 s.
    cmd = [sys.executable, "-m", "rpsim", "compare", "--model", "llama-70b", "--gpus", "h100x8", "--global-batch",
           "64", "--mb-size", "1", "--schedules", "roundpipe,1f1b", "--jobs", "2"]
    # As from a terminal: a suite run as a background job has SIGINT ignored, which children inherit.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509 - one disposition, no locks
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) >= 2, "compare never started its workers"
    time.sleep(1.0)  # let them take the schedules
    sent = time.monotonic()
    proc.send_signal(signum)
    while any(_alive(w) for w in workers) and time.monotonic() - sent < 10:
        time.sleep(0.02)
    stopped_s = time.monotonic() - sent
    out, err = proc.communicate(timeout=30)
    assert not any(_alive(w) for w in workers)
    assert stopped_s < 2.0, f"workers took {stopped_s:.2f} s to stop"
    assert proc.returncode == code
    assert b"Traceback" not in err and b"workers stopped" in err
    assert out == b""  # no table from an interrupted comparison
