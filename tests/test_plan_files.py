"""Malformed plan files: `rpsim simulate --plan bad.json` exits 2 with the JSON path or the reason and no
traceback, for structural errors (missing or unknown keys, wrong types, bad action text, invalid JSON) and
semantic ones (an incomplete plan, a dependency cycle)."""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from rpsim.cli.main import main
from rpsim.errors import PlanError
from rpsim.ir.planio import load_plan, plan_from_json, plan_to_json
from rpsim.planner import PlanRequest, make_plan
from rpsim.scenario import make_scenario
from rpsim.specs import TrainingSpec

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def good() -> dict[str, Any]:
    """A lowered resident 1F1B plan: 2 GPUs, 4 microbatches, host-staged activations (4090s)."""
    sc = make_scenario("qwen3-1.7b", "4090x2", TrainingSpec(global_batch=4, mb_size=1))
    return plan_to_json(make_plan(sc, PlanRequest("1f1b", weights="resident")))


def _simulate(capsys, path) -> tuple[int, str, str]:
    code = main(["simulate", "--plan", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def _lane(data: dict[str, Any], gpu: int, lane: str) -> list[str]:
    return next(e["actions"] for e in data["lanes"] if (e["gpu"], e["lane"]) == (gpu, lane))


def _swap(lane: list[str], a: str, b: str) -> None:
    i, j = lane.index(a), lane.index(b)
    lane[i], lane[j] = lane[j], lane[i]


def test_the_unmutated_plan_simulates(good, tmp_path, capsys):
    path = tmp_path / "good.json"
    path.write_text(json.dumps(good))
    code, out, err = _simulate(capsys, path)
    assert code == 0, err
    assert "1f1b" in out
    assert _lane(good, 0, "compute")[:3] == ["0F0", "0F1", "0B0"]  # what the mutations below rely on


BAD: dict[str, tuple[Mutation, str]] = {
    "missing top-level key": (lambda d: d.pop("n_mb"), r"plan \$: missing key 'n_mb'"),
    "missing lane key": (lambda d: d["lanes"][1].pop("actions"), r"plan \$\.lanes\[1\]: missing key 'actions'"),
    "unknown top-level key": (lambda d: d.update(colour="red"), r"plan \$: unknown key 'colour'; valid keys:"),
    "unknown action text": (lambda d: _lane(d, 0, "compute").__setitem__(1, "0X1"),
                            r"plan \$\.lanes\[0\]\.actions\[1\]: cannot parse action '0X1'"),
    "an unknown action field": (lambda d: _lane(d, 0, "compute").__setitem__(0, "0F0.q7"),
                                             r"\$\.lanes\[0\]\.actions\[0\]: .*bad field 'q7'"),
    "a missing stage": (lambda d: _lane(d, 1, "compute").clear(),
                        r"incomplete plan: \d+ compute actions missing, first 1B0"),
    "a backward before its forward": (lambda d: _swap(_lane(d, 0, "compute"), "0F0", "0B0"),
                                      r"deadlock: the dependencies and lane orders form a cycle: .*gpu0:0B0"),
    "an explicit edge closing a cycle": (lambda d: d.update(extra_edges=[[[1, "1B3"], [0, "0F0"]]]),
                                         r"deadlock: .*gpu1:1B3"),
    "an explicit edge to no action": (lambda d: d.update(extra_edges=[[[1, "1B9"], [0, "0F0"]]]),
                                      r"extra edge 1B9 \(gpu 1\) -> 0F0 \(gpu 0\) names an action no lane runs"),
    "wrong format": (lambda d: d.update(format="rpsim.trace"), r"\$\.format/\$\.version: expected 'rpsim.plan'"),
    "wrong type of n_gpus": (lambda d: d.update(n_gpus="2"), r"plan \$\.n_gpus: expected int, got '2'"),
    # Each case below raised a TypeError or AttributeError (a traceback) or loaded silently before planio
    # checked it.
    "wrong type of n_iters": (lambda d: d.update(n_iters="two"), r"plan \$\.n_iters: expected int, got 'two'"),
    "zero iterations": (lambda d: d.update(n_iters=0), r"plan \$\.n_iters: must be >= 1, got 0"),
    "options not an object": (lambda d: d.update(options=[1]), r"plan \$\.options: expected dict, got \[1\]"),
    "setup not an object": (lambda d: d.update(setup=[1]), r"plan \$\.setup: expected dict, got \[1\]"),
    "extra_edges not a list": (lambda d: d.update(extra_edges=5), r"plan \$\.extra_edges: expected list, got 5"),
    "unknown level": (lambda d: d.update(level="warp"),
                      r"plan \$\.level: 'warp' unknown; valid choices: compute, ideal, hop, pcie"),
    "unknown optimizer": (lambda d: d.update(optimizer="later"), r"plan \$\.optimizer: 'later' unknown"),
    "a lane listed twice": (lambda d: d["lanes"].append(copy.deepcopy(d["lanes"][0])),
                            r"plan \$\.lanes\[\d+\]: lane 'compute' of gpu 0 is listed twice"),
    "fused not a bool": (lambda d: d["partition"].update(fused="no"),
                         r"plan \$\.partition\.fused: expected true or false, got 'no'"),
    "empty setup": (lambda d: d.update(setup={}), r"plan \$\.setup: cannot rebuild the model, server and training"),
    "a GPU lane on the host": (lambda d: [e.update(gpu=-1) for e in d["lanes"] if e["gpu"] == 1],
                               r"lane \(-1, compute\): the optimizer lane lives on the host"),
    "an optimizer lane on a GPU": (lambda d: d["lanes"].append({"gpu": 0, "lane": "optimizer", "actions": []}),
                                   r"lane \(0, optimizer\): the optimizer lane lives on the host"),
    "transfers in an ideal plan": (lambda d: d.update(level="ideal"),
                                   r"a plan at level 'ideal' holds compute actions only"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_malformed_plan_exits_2_with_the_reason_and_no_traceback(case, good, tmp_path, capsys):
    mutate, message = BAD[case]
    data = copy.deepcopy(good)
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, out, err = _simulate(capsys, path)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert err.startswith("rpsim: error: ")
    assert re.search(message, err), err


@pytest.mark.parametrize(("text", "message"), [
    ('{"format": "rpsim.plan", ', r"plan file '.*bad\.json' is not valid JSON \(Expecting"),
    ("[1, 2]", r"plan \$: expected a JSON object"),
    ("", r"is not valid JSON"),
])
def test_a_file_that_is_no_plan_object_exits_2(text, message, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(text)
    code, _, err = _simulate(capsys, path)
    assert code == 2 and "Traceback" not in err and re.search(message, err), err


def test_a_missing_file_exits_2(tmp_path, capsys):
    code, _, err = _simulate(capsys, tmp_path / "nowhere.json")
    assert code == 2 and "not found" in err and "nowhere.json" in err


def test_errors_name_the_first_bad_path_and_load_plan_agrees(good, tmp_path):
    data = copy.deepcopy(good)
    _lane(data, 1, "compute")[2] = "1F"  # a forward without a microbatch
    with pytest.raises(PlanError, match=r"\$\.lanes\[\d+\]\.actions\[2\]: compute action F needs a stage and a"):
        plan_from_json(data)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(good))
    assert plan_to_json(load_plan(path)) == good
