"""Issue 16, "Bad input and faults", plans and traces: `rpsim validate` and `plot --trace --plan` check that
the trace belongs to the plan (model, schedule, GPU count, lanes and actions); traces with end < start, a
GPU outside the plan, no events or non-numeric times are refused; a plan that does not step every
parameter once per iteration is refused on load; shipped plans find their profiles from a clean checkout."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from rpexec.cli import main as rpexec_main
from rpsim.cli.main import main as rpsim_main
from rpsim.errors import PlanError
from rpsim.ir.planio import load_plan, plan_from_json
from rpsim.ir.validate import check_plan
from rpsim.sim.trace import load_trace
from rpsim.sim.trace_match import check_trace_matches_plan
from tests.rpexec_helpers import TINY, write_config
from tests.test_cli_errors import call

E03 = Path(__file__).resolve().parents[1] / "experiments" / "data" / "e03"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two plans of one tiny model (gpipe and 1f1b on 2 GPUs, gpipe on 4) and gpipe's simulated trace."""
    d = tmp_path_factory.mktemp("pair")
    config = write_config(d, TINY)
    setup = ["--model", config, "--seq", "16", "--global-batch", "8", "--n-mb", "4"]
    out = {}
    for name, gpus, schedule in [("gpipe", "4090x2", "gpipe"), ("1f1b", "4090x2", "1f1b"),
                                 ("gpipe4", "4090x4", "gpipe")]:
        out[name] = d / f"{name}.json"
        assert call(rpsim_main, "export", *setup, "--gpus", gpus, "--schedule", schedule, "-o", out[name])[0] == 0
    out["trace"] = d / "trace.json"
    assert call(rpsim_main, "simulate", "--plan", out["gpipe"], "--trace", out["trace"], "--format", "json")[0] == 0
    other = write_config(d, {**TINY, "hidden_size": 64}, "other.json")
    out["other_model"] = d / "other_model.json"
    assert call(rpsim_main, "export", "--model", other, *setup[2:], "--gpus", "4090x2", "--schedule", "gpipe",
                "-o", out["other_model"])[0] == 0
    return out


def _edit_trace(src: Path, dst: Path, edit) -> Path:
    data = json.loads(src.read_text())
    edit(data)
    dst.write_text(json.dumps(data))
    return dst


def test_trace_of_its_own_plan_is_accepted(pair):
    check_trace_matches_plan(load_plan(pair["gpipe"]), load_trace(pair["trace"]), "t", "p")
    code, out, _ = call(rpsim_main, "validate", "--plan", pair["gpipe"], "--measured", pair["trace"], "--format", "json")
    assert code == 0 and json.loads(out)["iteration_s"]["error"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("plan, needle", [("1f1b", "schedule 'gpipe'"), ("gpipe4", "n_gpus 2"),
                                          ("other_model", "model 'tiny'")])
def test_validate_refuses_a_trace_of_another_plan(pair, plan, needle):
    code, _, err = call(rpsim_main, "validate", "--plan", pair[plan], "--measured", pair["trace"])
    assert code == 2 and "does not belong" in err and needle in err


def test_validate_refuses_a_trace_whose_actions_differ_without_metadata(pair, tmp_path):
    """Metadata can be absent (a hand-made trace): the actions alone still tell the plans apart."""
    bare = _edit_trace(pair["trace"], tmp_path / "bare.json", lambda d: d.update(meta={}))
    code, _, err = call(rpsim_main, "validate", "--plan", pair["1f1b"], "--measured", bare)
    assert code == 2 and "orders later on that lane" in err


def test_plot_refuses_arrows_from_an_unrelated_plan(pair, tmp_path):
    fig = tmp_path / "x.png"
    code, _, err = call(rpsim_main, "plot", "--trace", pair["trace"], "--plan", pair["gpipe4"], "-o", fig)
    assert code == 2 and "does not belong" in err and not fig.exists()
    assert call(rpsim_main, "plot", "--trace", pair["trace"], "--plan", pair["gpipe"], "-o", fig)[0] == 0


@pytest.mark.parametrize("case, edit, needle", [
    ("end before start", lambda d: d["events"][0].update(start_s=2.0, end_s=1.0), "is before start_s"),
    ("GPU outside the plan", lambda d: d["events"][0].update(gpu=7), "GPU 7 is outside"),
    ("no events", lambda d: d.update(events=[]), "no events"),
    ("non-numeric time", lambda d: d["events"][0].update(end_s="1.0"), "end_s: invalid value '1.0'"),
    ("NaN time", lambda d: d["events"][0].update(start_s=float("nan")), "start_s: invalid value nan"),
    ("unknown key", lambda d: d["events"][0].update(colour=1), "unknown key 'colour'"),
    ("event not an object", lambda d: d["events"].append(3), "expected an event object"),
])
def test_bad_traces_are_refused(pair, tmp_path, case, edit, needle):
    bad = _edit_trace(pair["trace"], tmp_path / "bad.json", edit)
    code, _, err = call(rpsim_main, "validate", "--plan", pair["gpipe"], "--measured", bad)
    assert code == 2 and needle in err, case


def _without_one_step(plan_path: Path) -> dict:
    data = json.loads(plan_path.read_text())
    for lane in data["lanes"]:
        steps = [a for a in lane["actions"] if "STEP" in a]
        if steps:
            lane["actions"].remove(steps[-1])
            return data
    raise AssertionError("the plan has no STEP")


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_plan_missing_one_step_is_refused(pair, tmp_path, schedule):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_without_one_step(pair[schedule])))
    for main, argv in [(rpsim_main, ["simulate", "--plan", bad]), (rpexec_main, ["run", bad])]:
        code, _, err = call(main, *argv)
        assert code == 2 and "no optimizer STEP updates pipeline layer" in err


def test_plan_stepping_a_layer_twice_is_refused(pair):
    plan = load_plan(pair["gpipe"])
    (gpu, lane), actions = next((k, v) for k, v in plan.lanes.items() if any(a.kind == "STEP" for a in v))
    step = next(a for a in actions if a.kind == "STEP")
    twice = replace(plan, lanes={**plan.lanes, (gpu, lane): (*actions, replace(step, mb=0))})
    with pytest.raises(PlanError, match="stepped 2 times"):
        check_plan(twice)


def test_every_roundpipe_iteration_steps_every_layer(tmp_path):
    """Host (chunked, per layer) steps of an async plan over several iterations pass the same check."""
    config = write_config(tmp_path, TINY)
    out = tmp_path / "rp.json"
    assert call(rpsim_main, "export", "--model", config, "--gpus", "4090x2", "--seq", "16", "--global-batch", "8",
                "--n-mb", "4", "--schedule", "roundpipe", "-o", out)[0] == 0
    data = json.loads(out.read_text())
    host = next(lane for lane in data["lanes"] if lane["lane"] == "optimizer")
    host["actions"] = [a for a in host["actions"] if a != host["actions"][-1]]
    with pytest.raises(PlanError, match="no optimizer STEP"):
        check_plan(plan_from_json(data))


SHIPPED = sorted(E03.glob("*-plan.json")) + [E03.parent / "rpexec-8b" / "plan.json",
                                              *sorted((E03.parent / "rpexec-h200x2").glob("*-plan.json"))]


@pytest.mark.parametrize("plan_path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_plans_find_their_profile_and_trace(plan_path):
    """Every shipped plan loads (its profile, if any, found beside it) and its measured trace belongs to it."""
    plan = load_plan(plan_path)
    assert plan.setup["profile"] is None or Path(plan.setup["profile"]).is_file()
    trace = Path(str(plan_path).replace("plan.json", "trace.json"))
    check_trace_matches_plan(plan, load_trace(trace), str(trace), str(plan_path))


def test_shipped_plan_simulates_from_another_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert call(rpsim_main, "simulate", "--plan", E03 / "llama-0.7b-gpipe-1gpu-plan.json", "--format", "json")[0] == 0


def test_plan_and_profile_move_together(tmp_path):
    """export stores the profile relative to the plan, so the two can move to another folder together."""
    config = write_config(tmp_path, TINY)
    made = tmp_path / "made"
    made.mkdir()
    layers = ([{"name": "embed", "forward_s": 0.0, "backward_s": 0.0}]
              + [{"name": f"layer.{i}", "forward_s": 1e-3, "backward_s": 2e-3} for i in range(TINY["num_hidden_layers"])]
              + [{"name": "head", "forward_s": 1e-3, "backward_s": 2e-3}])
    (made / "prof.json").write_text(json.dumps({"format": "rpsim.profile", "version": 1, "layers": layers}))
    assert call(rpsim_main, "export", "--model", config, "--gpus", "4090x2", "--seq", "16", "--global-batch", "8",
                "--n-mb", "4", "--schedule", "gpipe", "--profile", made / "prof.json", "-o", made / "plan.json")[0] == 0
    assert json.loads((made / "plan.json").read_text())["setup"]["profile"] == "prof.json"
    moved = shutil.move(str(made), str(tmp_path / "moved"))
    assert call(rpsim_main, "simulate", "--plan", Path(moved) / "plan.json")[0] == 0


@pytest.mark.parametrize("key, value", [("gpu_memory_bytes", "0"), ("gpu_memory_bytes", True),
                                        ("gpu_memory_bytes", -1), ("server", 2), ("profile", 3)])
def test_plan_setup_types(pair, tmp_path, key, value):
    """Found by tests/test_cli_fuzz.py: a string memory cap escaped as a TypeError, `true` capped GPUs at 1 B."""
    data = json.loads(pair["gpipe"].read_text())
    data["setup"][key] = value
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, _, err = call(rpsim_main, "simulate", "--plan", bad, "--trace", tmp_path / "t.json")
    assert code == 2 and f"$.setup.{key}" in err and not (tmp_path / "t.json").exists()


def test_infeasible_simulation_writes_no_trace(pair, tmp_path):
    data = json.loads(pair["gpipe"].read_text())
    data["setup"]["gpu_memory_bytes"] = 1024
    small = tmp_path / "small.json"
    small.write_text(json.dumps(data))
    code, _, err = call(rpsim_main, "simulate", "--plan", small, "--trace", tmp_path / "t.json")
    assert code == 1 and "not written" in err and not (tmp_path / "t.json").exists()
