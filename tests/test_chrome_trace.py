"""Chrome / Perfetto export: one complete event per traced action at the right process, thread and time,
process and thread names, and flow arrows in matched s/f pairs for exactly the cross-device
dependencies, each bound to the slices of its two actions."""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from rpsim.ir import parse_action
from rpsim.ir.deps import dependency_graph
from rpsim.planner import PlanRequest, make_plan
from rpsim.plot.chrome import chrome_trace
from rpsim.scenario import make_scenario
from rpsim.sim.simulate import simulate
from rpsim.specs import TrainingSpec

SETUP = ("--model", "qwen3-1.7b", "--gpus", "4090x4", "--global-batch", "8", "--n-mb", "8")


@pytest.fixture(scope="module")
def result():
    sc = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(global_batch=8, mb_size=1))
    return simulate(make_plan(sc, PlanRequest("roundpipe")), sc)


@pytest.fixture(scope="module")
def chrome(result):
    return json.loads(json.dumps(chrome_trace(result.plan, result.trace)))  # valid JSON, round-tripped


def names(chrome: dict) -> tuple[dict, dict]:
    procs = {e["pid"]: e["args"]["name"] for e in chrome["traceEvents"] if e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in chrome["traceEvents"]
               if e["name"] == "thread_name"}
    return procs, threads


def test_one_complete_event_per_traced_action(result, chrome):
    procs, threads = names(chrome)
    xs = [e for e in chrome["traceEvents"] if e["ph"] == "X"]
    assert len(xs) == len(result.trace.events)
    device = {name: pid for pid, name in procs.items()}
    want = Counter((device["host CPU" if e.gpu == -1 else f"GPU {e.gpu}"], e.lane, e.action, e.start_s * 1e6)
                   for e in result.trace.events)
    got = Counter((x["pid"], threads[(x["pid"], x["tid"])], x["name"], x["ts"]) for x in xs)
    assert got == want
    for x, e in zip(xs, result.trace.events, strict=True):
        assert x["dur"] == pytest.approx((e.end_s - e.start_s) * 1e6) and x["dur"] >= 0
        assert x["args"] == {"stage": e.stage, "mb": e.mb, "it": e.it, "bytes": e.bytes}
        assert x["cat"] == e.kind


def test_process_and_thread_metadata(result, chrome):
    procs, threads = names(chrome)
    assert set(procs.values()) == {f"GPU {g}" for g in range(result.plan.n_gpus)} | {"host CPU"}
    assert len(set(procs)) == len(procs)  # one pid per device
    used = {(e["pid"], e["tid"]) for e in chrome["traceEvents"] if e["ph"] in ("X", "s", "f")}
    assert used <= set(threads)
    lanes = {(procs[p], name) for (p, _), name in threads.items()}
    assert ("host CPU", "optimizer") in lanes and ("GPU 0", "param_h2d") in lanes
    for e in chrome["traceEvents"]:
        assert {"ph", "pid", "tid", "name"} <= set(e)


def test_flows_are_matched_pairs_over_cross_device_edges(result, chrome):
    flows = defaultdict(list)
    for e in chrome["traceEvents"]:
        if e["ph"] in ("s", "f"):
            flows[e["id"]].append(e)
    assert flows
    for pair in flows.values():
        assert sorted(e["ph"] for e in pair) == ["f", "s"]
        s, f = sorted(pair, key=lambda e: e["ph"], reverse=True)
        assert s["name"] == f["name"] and s["cat"] == f["cat"] and f.get("bp") == "e"
        assert s["pid"] != f["pid"] and s["ts"] <= f["ts"]  # across devices, forward in time
    traced = {(e.gpu, parse_action(e.action)) for e in result.trace.events}
    g = dependency_graph(result.plan)
    cross = [(u, v) for u, v, d in g.edges(data=True) if u[0] != v[0] and d["why"] != "lane"
             and u in traced and v in traced]
    assert len(flows) == len(cross)
    assert {e["name"] for p in flows.values() for e in p} <= {"data", "weights", "window", "explicit"}


def test_flow_ends_bind_inside_their_slices(chrome):
    slices = defaultdict(list)
    for e in chrome["traceEvents"]:
        if e["ph"] == "X":
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for e in chrome["traceEvents"]:
        if e["ph"] in ("s", "f"):
            assert any(a <= e["ts"] <= b for a, b in slices[(e["pid"], e["tid"])]), e


def test_without_a_plan_there_are_no_flows(result):
    data = chrome_trace(None, result.trace)
    assert not [e for e in data["traceEvents"] if e["ph"] in ("s", "f")]
    assert sum(e["ph"] == "X" for e in data["traceEvents"]) == len(result.trace.events)


def test_cli_converts_any_trace_file(run_cli, tmp_path):
    trace, plan = tmp_path / "t.json", tmp_path / "plan.json"
    sim_chrome = tmp_path / "sim.chrome.json"
    code, _, err = run_cli("simulate", *SETUP, "--schedule", "roundpipe", "--trace", str(trace),
                           "--chrome-trace", str(sim_chrome))
    assert code == 0, err
    assert run_cli("export", *SETUP, "--schedule", "roundpipe", "-o", str(plan))[0] == 0
    bare, flowed = tmp_path / "bare.json", tmp_path / "flowed.json"
    assert run_cli("plot", "--trace", str(trace), "--chrome-trace", str(bare))[0] == 0
    assert run_cli("plot", "--trace", str(trace), "--plan", str(plan), "--chrome-trace", str(flowed))[0] == 0
    n = len(json.loads(trace.read_text())["events"])
    phases = {p: Counter(e["ph"] for e in json.loads(p.read_text())["traceEvents"])
              for p in (bare, flowed, sim_chrome)}
    assert all(c["X"] == n for c in phases.values())
    assert phases[bare]["s"] == 0
    assert phases[flowed]["s"] == phases[flowed]["f"] == phases[sim_chrome]["s"] > 0
