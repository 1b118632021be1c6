"""`rpsim compare --jobs`: schedules simulated on worker processes give the rows of one process, byte for
byte; a bad count is refused (exit 2); Ctrl-C (130) and SIGTERM (143) stop every worker at once, without a
traceback."""
from __future__ import annotations

import signal
import sys

import pytest

from rpsim.cli.main import main
from tests.pool_signal_helpers import signal_when_busy

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
    stopped = signal_when_busy(cmd, signum)
    assert stopped.n_workers >= 2, "compare never started its workers"
    assert stopped.workers_left == 0
    assert stopped.stop_s < 2.0, f"workers took {stopped.stop_s:.2f} s to stop"
    assert stopped.returncode == code
    assert b"Traceback" not in stopped.err and b"workers stopped" in stopped.err
    assert stopped.out == b""  # no table from an interrupted comparison
