"""`rpexec run --optimizer-threads`: the host STEP's intra-op threads (rpexec.cli.optimizer_threads)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rpexec.cli import main as rpexec_main
from rpexec.cli import optimizer_threads
from rpsim.errors import SpecError
from rpsim.ir.planio import load_plan
from tests.rpexec_helpers import TINY, export, write_config


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("threads")
    return export(tmp, write_config(tmp, TINY), "roundpipe", "4090x2")


def test_auto_leaves_a_core_per_other_lane(plan_path):
    plan = load_plan(plan_path)
    lanes = len(plan.lanes)
    assert optimizer_threads("auto", plan, 64) == 64 - (lanes - 1)
    assert optimizer_threads("auto", plan, 2) == 1  # never below one thread
    assert optimizer_threads(None, plan, 64) is None
    assert optimizer_threads("3", plan, 4) == 3


@pytest.mark.parametrize("value", ["0", "5", "-1", "many", "2.5"])
def test_out_of_range_or_not_a_number_names_the_flag_and_the_choices(plan_path, value):
    with pytest.raises(SpecError, match=rf"--optimizer-threads {value}: valid: an integer 1\.\.4 .* or auto"):
        optimizer_threads(value, load_plan(plan_path), 4)


def test_bad_value_exits_2_before_running(plan_path, capsys):
    assert rpexec_main(["run", str(plan_path), "--optimizer-threads", "none"]) == 2
    err = capsys.readouterr().err
    assert "--optimizer-threads none" in err and "auto" in err and "Traceback" not in err


def test_a_run_with_one_optimizer_thread_matches_the_reference_and_restores_threads(plan_path, capsys):
    before = torch.get_num_threads()
    assert rpexec_main(["run", str(plan_path), "--check-grads", "--optimizer-threads", "1"]) == 0
    assert "check-grads ok" in capsys.readouterr().out
    assert torch.get_num_threads() == before
