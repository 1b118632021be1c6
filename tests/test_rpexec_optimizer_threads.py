"""`rpexec run --optimizer-threads`: the host STEP's intra-op threads (rpexec.step_threads)."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from rpexec.cli import main as rpexec_main
from rpexec.step_threads import step_threads
from rpsim.errors import SpecError
from tests.rpexec_helpers import TINY, export, write_config


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("threads")
    return export(tmp, write_config(tmp, TINY), "roundpipe", "4090x2")


def test_auto_leaves_a_core_to_each_other_lane_on_a_gpu():
    assert step_threads("auto", 6, 32, 32) == 27  # the 1-GPU e03 RoundPipe plans on the 32-core H200 host
    assert step_threads("auto", 11, 32, 32) == 22
    assert step_threads("auto", 6, 2, 2) == 1  # never below one thread


def test_auto_keeps_every_thread_on_the_cpu_device_and_for_a_synchronous_optimizer():
    assert step_threads("auto", 6, 32, 16, device="cpu") == 16  # the lanes compute on the same threads
    assert step_threads("auto", 6, 32, 16, async_optimizer=False) == 16  # its STEPs run beside idle lanes


def test_all_and_counts():
    assert step_threads("all", 6, 32, 16) == 16
    assert step_threads("3", 6, 4, 4) == 3
    assert step_threads(3, 6, 4, 4) == 3


@pytest.mark.parametrize("value", ["0", "5", "-1", "many", "2.5"])
def test_out_of_range_or_not_a_number_names_the_flag_and_the_choices(value):
    with pytest.raises(SpecError, match=rf"--optimizer-threads {value}: valid: auto .*all .*1\.\.4"):
        step_threads(value, 6, 4, 4)


def test_bad_value_exits_2_before_running(plan_path, capsys):
    assert rpexec_main(["run", str(plan_path), "--optimizer-threads", "none"]) == 2
    err = capsys.readouterr().err
    assert "--optimizer-threads none" in err and "auto" in err and "Traceback" not in err


def test_a_run_with_one_optimizer_thread_matches_the_reference_restores_threads_and_records_them(plan_path, capsys, tmp_path):
    before = torch.get_num_threads()
    trace = tmp_path / "t.json"
    assert rpexec_main(["run", str(plan_path), "--check-grads", "--optimizer-threads", "1", "--trace", str(trace)]) == 0
    assert "check-grads ok" in capsys.readouterr().out
    assert torch.get_num_threads() == before
    assert json.loads(trace.read_text())["meta"]["optimizer_threads"] == 1
