"""CLI fuzz (issue 16): hypothesis draws flag values and damages input files (plans, traces, model
configs, topologies, profiles). Whatever it draws, rpsim and rpexec must exit 0, 1 or 2, print no
traceback without --debug, and leave no output file (nor a temporary one) after a failure. Bounded
(examples, tiny model) to run in well under a minute on CI's 2 cores."""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpexec.cli import main as rpexec_main
from rpsim.cli.main import main as rpsim_main
from rpsim.schedules import SCHEDULES
from tests.rpexec_helpers import TINY, write_config
from tests.test_cli_errors import TOPOLOGY

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fuzz-inputs")
    config = write_config(d, TINY)
    plan, trace = d / "plan.json", d / "trace.json"
    setup = ["--model", str(config), "--gpus", "4090x2", "--seq", "16", "--global-batch", "8", "--n-mb", "4"]
    assert rpsim_main(["export", *setup, "--schedule", "gpipe", "-o", str(plan)]) == 0
    assert rpsim_main(["simulate", "--plan", str(plan), "--trace", str(trace), "--format", "json"]) == 0
    topology = d / "box.toml"
    topology.write_text(TOPOLOGY)
    layers = ([{"name": "embed", "forward_s": 0.0, "backward_s": 0.0}]
              + [{"name": f"layer.{i}", "forward_s": 1e-3, "backward_s": 2e-3} for i in range(8)]
              + [{"name": "head", "forward_s": 1e-3, "backward_s": 2e-3}])
    profile = d / "profile.json"
    profile.write_text(json.dumps({"format": "rpsim.profile", "version": 1, "layers": layers,
                                   "links": {"hop_s": 1e-4}, "cpu": {"adam_params_per_s": 2e9}}))
    return {"dir": d, "config": config, "plan": plan, "trace": trace, "topology": topology, "profile": profile}


def run_checked(main: Any, argv: list[str], outputs: list[Path]) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code in (0, 1, 2), (argv, code, err.getvalue()[-2000:])
    assert "Traceback" not in err.getvalue(), (argv, err.getvalue()[-3000:])
    if code != 0:
        for path in outputs:
            assert not path.exists(), (argv, path)
    for path in outputs:  # no temporary or probe file is ever left beside an output
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], argv
    return code


# ---- flag values -----------------------------------------------------------------------------------

COUNTS = st.one_of(st.integers(-3, 40).map(str), st.sampled_from(["0", "2147483648", "1e3", "abc", "", "-0"]))
REALS = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "0.5", "24", "1e300", "x"])
FLAG_VALUES: dict[str, st.SearchStrategy[str]] = {
    "--seq": st.one_of(COUNTS, st.sampled_from(["1048576", "33"])), "--global-batch": COUNTS, "--mb-size": COUNTS,
    "--n-mb": COUNTS, "--lora-rank": COUNTS, "--loss-chunk-tokens": COUNTS, "--virtual-stages": COUNTS,
    "--round-size": COUNTS, "--iters": st.sampled_from(["-4", "0", "1", "2", "x"]),
    "--gpu-memory-gib": REALS, "--mode": st.sampled_from(["full", "lora", "half"]),
    "--precision": st.sampled_from(["bf16", "fp16-acc16", "fp8", ""]),
    "--recompute": st.sampled_from(["none", "stage", "layer", "all"]),
    "--fidelity": st.sampled_from(["ideal", "hop", "pcie", "exact"]),
    "--gpus": st.sampled_from(["4090x1", "4090x2", "h200x2", "4090x0", "4090x65", "x", "4090x2x", "a100x-1"]),
    "--partition": st.sampled_from(["4,4", "2,2,2,2", "8", "3,5|0,4,4", "0,8", "x", "", "9,-1", "4,4|"]),
    "--partitioner": st.sampled_from(["uneven", "balanced", "even", "roundpipe-paper", "roundpipe-library", "z"]),
    "--g0-rule": st.sampled_from(["paper", "earliest-free", "latest"]),
    "--weights": st.sampled_from(["auto", "resident", "streamed", "cloud"]),
    "--model-override": st.sampled_from(["n_layers=4", "hidden=0", "n_heads=3", "vocab=x", "bogus=1", ""]),
}
SCHEDULE_NAMES = [*SCHEDULES, "bogus", ""]


@FUZZ
@given(command=st.sampled_from(["costs", "compare", "simulate", "export"]),
       flags=st.lists(st.sampled_from(sorted(FLAG_VALUES)), unique=True, max_size=4), data=st.data())
def test_rpsim_flag_values(inputs, command, flags, data):
    out_dir = Path(tempfile.mkdtemp(dir=inputs["dir"]))
    argv = [command, "--model", str(inputs["config"]), "--gpus", "4090x2", "--seq", "16", "--global-batch", "8"]
    for flag in flags:
        if flag in ("--mb-size", "--n-mb") and ({"--mb-size", "--n-mb"} <= set(flags)):
            continue  # argparse's own exclusive-group error is not what this test is about
        argv += [flag, data.draw(FLAG_VALUES[flag], label=flag)]
    outputs: list[Path] = []
    if command == "compare":
        names = data.draw(st.lists(st.sampled_from(SCHEDULE_NAMES[:-2]), min_size=1, max_size=2, unique=True))
        argv += ["--schedules", ",".join(names)]
    if command in ("simulate", "export"):
        argv += ["--schedule", data.draw(st.sampled_from(SCHEDULE_NAMES), label="--schedule")]
        outputs = [out_dir / "out.json"]
        argv += ["--trace" if command == "simulate" else "-o", str(outputs[0])]
    code = run_checked(rpsim_main, argv, outputs)
    if code == 0 and outputs:
        assert json.loads(outputs[0].read_text())


@settings(FUZZ, max_examples=6)  # each accepted example runs the tiny plan with torch (~1-3 s)
@given(flags=st.lists(st.sampled_from(["--iters", "--lr", "--watchdog-s", "--seed", "--inject-fault", "--dtype"]),
                      unique=True, max_size=3), data=st.data())
def test_rpexec_flag_values(inputs, flags, data):
    values = {"--iters": st.sampled_from(["-4", "0", "1", "2", "x"]), "--lr": REALS, "--watchdog-s": REALS,
              "--seed": COUNTS, "--dtype": st.sampled_from(["fp32", "bf16", "int8"]),
              "--inject-fault": st.sampled_from(["foo", "0:compute:0F0:boom", "9:compute:0F0:raise", "0:x:0F0:raise",
                                                 "::::", "0:compute:9F9:raise"])}
    out = Path(tempfile.mkdtemp(dir=inputs["dir"])) / "trace.json"
    argv = ["run", str(inputs["plan"]), "--trace", str(out)]
    for flag in flags:
        argv += [flag, data.draw(values[flag], label=flag)]
    run_checked(rpexec_main, argv, [out])


# ---- damaged files ---------------------------------------------------------------------------------

JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                                     st.floats(allow_nan=False), st.text(max_size=6)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                       max_size=3),
                           max_leaves=5)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON tree, as a key/index path (the top level excluded)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        out.append((*prefix, key))
        if len(out) < 400:  # plans are large: a sample of the places is enough
            out += _paths(child, (*prefix, key))
    return out


@st.composite
def damaged_json(draw: Any, text: str) -> str:
    how = draw(st.sampled_from(["truncate", "replace", "delete", "add key", "garbage"]))
    if how == "truncate":
        return text[:draw(st.integers(0, len(text) - 1))]
    if how == "garbage":
        return draw(st.text(max_size=40))
    data = json.loads(text)
    places = _paths(data)
    *parent_path, last = draw(st.sampled_from(places))
    parent = data
    for key in parent_path:
        parent = parent[key]
    if how == "replace":
        parent[last] = draw(JSON_VALUES)
    elif how == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=6))] = draw(JSON_VALUES)
    else:
        parent.append(draw(JSON_VALUES))
    return json.dumps(data)


@st.composite
def damaged_toml(draw: Any, text: str) -> str:
    lines = text.splitlines()
    i = draw(st.integers(0, len(lines) - 1))
    if "=" in lines[i] and draw(st.booleans()):
        key = lines[i].split("=")[0]
        value = draw(st.sampled_from(["-1", "0", "nan", "inf", '"x"', "[]", "true", "1e400", "2.5", "{}"]))
        lines[i] = f"{key}= {value}"
    else:
        lines = lines[:i] + lines[i + 1:] if draw(st.booleans()) else lines[:i] + ["]]["] + lines[i:]
    return "\n".join(lines) + "\n"


TARGETS = ["plan:simulate", "plan:rpexec", "trace:validate", "trace:plot", "config:export", "topology:costs",
           "profile:compare"]


@FUZZ
@given(target=st.sampled_from(TARGETS), data=st.data())
def test_damaged_files(inputs, target, data):
    src = inputs[target.split(":")[0]]
    text = src.read_text()
    damaged = data.draw(damaged_toml(text) if src.suffix == ".toml" else damaged_json(text), label="damaged")
    work = Path(tempfile.mkdtemp(dir=inputs["dir"]))
    bad = work / src.name
    bad.write_text(damaged)
    out_dir = work / "out"
    out_dir.mkdir()
    setup = ["--model", str(inputs["config"]), "--gpus", "4090x2", "--seq", "16", "--global-batch", "8", "--n-mb", "4"]
    out = out_dir / "out.json"
    main, argv = {
        "plan:simulate": (rpsim_main, ["simulate", "--plan", str(bad), "--trace", str(out)]),
        "plan:rpexec": (rpexec_main, ["run", str(bad), "--trace", str(out), "--watchdog-s", "20"]),
        "trace:validate": (rpsim_main, ["validate", "--plan", str(inputs["plan"]), "--measured", str(bad)]),
        "trace:plot": (rpsim_main, ["plot", "--trace", str(bad), "--plan", str(inputs["plan"]), "--chrome-trace", str(out)]),
        "config:export": (rpsim_main, ["export", *setup, "--model", str(bad), "--schedule", "1f1b", "-o", str(out)]),
        "topology:costs": (rpsim_main, ["costs", *setup, "--gpus", str(bad)]),
        "profile:compare": (rpsim_main, ["compare", *setup, "--schedules", "gpipe,roundpipe", "--profile", str(bad)]),
    }[target]
    run_checked(main, argv, [out])
