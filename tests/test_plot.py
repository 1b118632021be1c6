"""Figures: every traced action but FREE is exactly one rectangle on its lane's row (counted back from the
figure), labels only where they fit, memory panels with capacities, the comparison figure, formats by
extension, and `rpsim plot` / `rpsim compare --plot` through main([...]). All headless."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter

import pytest
from matplotlib.figure import Figure

from rpsim.compare import Row, infeasible_row
from rpsim.errors import SpecError
from rpsim.planner import PlanRequest, make_plan
from rpsim.plot.bubble_figure import bubble_figure
from rpsim.plot.compare_figure import compare_figure
from rpsim.plot.gantt import bar_counts
from rpsim.plot.labels import compute_labels, compute_runs, text_width_pt
from rpsim.plot.memory_figure import memory_figure
from rpsim.plot.save import save_figure
from rpsim.plot.view import iteration_ends
from rpsim.scenario import make_scenario
from rpsim.sim.memory import ALLOCATOR_OVERHEAD
from rpsim.sim.simulate import simulate
from rpsim.sim.trace import Trace, TraceEvent
from rpsim.specs import TrainingSpec

SETUP = ("--model", "qwen3-1.7b", "--gpus", "4090x4", "--global-batch", "8", "--n-mb", "8")


@pytest.fixture(scope="module")
def scenario():
    return make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(global_batch=8, mb_size=1))


@pytest.fixture(scope="module")
def results(scenario):
    return {s: simulate(make_plan(scenario, PlanRequest(s)), scenario) for s in ("roundpipe", "1f1b")}


def drawn_per_lane(trace: Trace) -> Counter:
    return Counter((e.gpu, e.lane) for e in trace.events if e.kind != "FREE")


@pytest.mark.parametrize("schedule", ["roundpipe", "1f1b"])
def test_bars_per_lane_equal_the_traces_actions(results, schedule):
    r = results[schedule]
    fig = bubble_figure(r.trace, r.plan, r.metrics)
    assert isinstance(fig, Figure)
    drawn = {(gpu, lane): n for (_panel, gpu, lane), n in bar_counts(fig).items()}
    assert drawn == drawn_per_lane(r.trace)
    lanes = {lane for _, lane in drawn}
    assert "compute" in lanes and {"h2d", "d2h"} <= lanes
    if schedule == "roundpipe":  # the trace really had hidden FREEs, the host optimizer and RoundPipe's lanes
        assert any(e.kind == "FREE" for e in r.trace.events) and (-1, "optimizer") in drawn
        assert {"h2d", "d2h", "param_h2d", "grad_d2h"} <= lanes


def test_figure_states_iteration_bubbles_and_legend(results):
    r = results["roundpipe"]
    fig = bubble_figure(r.trace, r.plan, r.metrics)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
    assert fig._suptitle is not None and "qwen3-1.7b" in fig._suptitle.get_text()
    title = fig._suptitle.get_text()
    assert "roundpipe" in title and f"bubble {100 * r.metrics['bubble']:.1f}%" in title
    assert sum(t.startswith("bubble ") for t in texts) == r.plan.n_gpus
    assert sum(t.startswith("end of it") for t in texts) == r.plan.n_iters
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "forward" in legend and "backward" in legend and "LOAD (weight upload)" in legend
    assert not any("FREE" in t for t in legend)
    assert fig.axes[0].get_xlabel() in ("time (s)", "time (ms)")


def test_per_gpu_bubbles_average_to_the_metric(results):
    from rpsim.plot.view import trace_view
    for r in results.values():
        v = trace_view(r.trace, r.plan, r.metrics)
        assert sum(v.gpu_bubble) / len(v.gpu_bubble) == pytest.approx(r.metrics["bubble"], abs=1e-9)


def test_short_traces_use_milliseconds_and_iteration_ends_include_the_step():
    ev = [TraceEvent(0, "compute", "0F0", "F", 0, 0, 0, 0.0, 0.010),
          TraceEvent(0, "compute", "0B0", "B", 0, 0, 0, 0.010, 0.030),
          TraceEvent(0, "compute", "0FREE0.pF", "FREE", 0, 0, 0, 0.030, 0.030),
          TraceEvent(-1, "optimizer", "0STEP.pB.c0", "STEP", 0, None, 0, 0.030, 0.050)]
    trace = Trace(tuple(ev), {"schedule": "gpipe", "n_gpus": 1})
    fig = bubble_figure(trace)
    assert fig.axes[0].get_xlabel() == "time (ms)"
    assert fig.axes[0].get_xlim()[1] == pytest.approx(50 * 1.01)
    assert {k[1:]: n for k, n in bar_counts(fig).items()} == {(0, "compute"): 2, (-1, "optimizer"): 1}
    assert iteration_ends(trace) == (0.050,)  # a flushed iteration ends with its optimizer step


def test_labels_fit_their_bars_and_collapse_when_dense(results):
    # Compute actions only: resident 1F1B also runs its optimizer STEP on the compute lane, unlabelled.
    events = [e for e in results["1f1b"].trace.events if e.gpu == 0 and e.kind in ("F", "B")]
    events.sort(key=lambda e: e.start_s)
    roomy = compute_labels(events, 1.0, 1e6, 6.0)
    assert len(roomy) == len(events)  # every bar has its own "<stage><kind><mb>" label
    assert {x.text for x in roomy} == {f"{e.stage}{e.kind}{e.mb}" for e in events}
    assert compute_labels(events, 1.0, 1e-3, 6.0) == []  # nothing fits, nothing drawn
    for pt_per_s in (20.0, 200.0, 2000.0):
        labels = compute_labels(events, 1.0, pt_per_s, 6.0)
        spans = {(run[0].start_s + run[-1].end_s) / 2: run for run in compute_runs(events)}
        spans.update({(e.start_s + e.end_s) / 2: [e] for e in events})
        for lab in labels:  # each label is centred on its bar or run and no wider than it
            run = spans[lab.x]
            assert text_width_pt(lab.text, 6.0) <= (run[-1].end_s - run[0].start_s) * pt_per_s


def test_memory_figure_has_a_panel_per_gpu_and_host_with_capacities(results, scenario):
    r = results["roundpipe"]
    fig = memory_figure(r, scenario)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == r.plan.n_gpus + 1
    titles = [ax.get_title(loc="left") for ax in panels]
    assert titles[0].startswith("GPU 0: peak") and titles[-1].startswith("host: peak")
    gpu0 = max(panels[0].lines[0].get_ydata())
    assert gpu0 == pytest.approx(r.memory.peak_bytes(0) * ALLOCATOR_OVERHEAD / 2**30)
    caps = [ax.lines[1].get_ydata()[0] for ax in panels]  # the dashed capacity line
    assert caps[0] == pytest.approx(scenario.server.gpu.memory_bytes / 2**30)
    assert caps[-1] == pytest.approx(scenario.server.host.dram_bytes / 2**30)


def test_compare_figure_stacks_schedules_and_names_infeasible_and_unbuilt(results, scenario):
    rp, fb = results["roundpipe"], results["1f1b"]
    bad = dict(fb.metrics, feasible=False, reason="GPU 3 needs 99.0 GiB, has 24.0 GiB")
    rows = [Row(rp.metrics, rp), Row(bad, dataclasses.replace(fb, metrics=bad)),
            Row(infeasible_row("gpipe", scenario, "no partition fits"), None)]
    fig = compare_figure(rows, scenario)
    counts = bar_counts(fig)
    for name, r in (("roundpipe", rp), ("1f1b", fb)):
        want = Counter((e.gpu, e.lane) for e in r.trace.events if e.lane == "compute" and e.kind != "FREE")
        assert {(g, lane): n for (p, g, lane), n in counts.items() if p == name} == want
    assert {p for p, _, _ in counts} == {"roundpipe", "1f1b"}  # compute lanes only, no panel for gpipe
    texts = [t.get_text() for t in fig.texts] + [ax.get_title(loc="right") for ax in fig.axes]
    assert "infeasible: GPU 3 needs 99.0 GiB, has 24.0 GiB" in texts
    assert "not built: gpipe - no partition fits" in texts
    bars = fig.axes[-1]
    assert [t.get_text() for t in bars.get_yticklabels()] == ["roundpipe", "1f1b"]
    assert len(bars.patches) == 2 * 5  # compute + fill, drain, switch, intra per schedule


@pytest.mark.parametrize("ext, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_format_follows_the_extension_and_is_reproducible(results, tmp_path, ext, magic):
    r = results["1f1b"]
    a, b = tmp_path / f"a{ext}", tmp_path / f"b{ext}"
    save_figure(bubble_figure(r.trace, r.plan, r.metrics), a)
    save_figure(bubble_figure(r.trace, r.plan, r.metrics), b)
    assert a.read_bytes().startswith(magic) and a.read_bytes() == b.read_bytes()


def test_unknown_extension_names_the_valid_ones(results, tmp_path):
    with pytest.raises(SpecError, match=r"valid choices: \.png, \.svg, \.pdf"):
        save_figure(Figure(), tmp_path / "chart.jpg")
    assert not (tmp_path / "chart.jpg").exists()


def test_plotting_never_imports_pyplot_or_torch():
    code = ("import sys\nfrom rpsim.cli.main import main\n"
            "rc = main(['plot', " + ", ".join(repr(a) for a in SETUP) + ", '--schedule', '1f1b', "
            "'--fidelity', 'ideal', '-o', sys.argv[1]])\n"
            "sys.exit(rc or ('matplotlib.pyplot' in sys.modules) * 3 or ('torch' in sys.modules) * 4)")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        assert subprocess.run([sys.executable, "-c", code, f"{d}/c.png"], check=False).returncode == 0


# --- the CLI -------------------------------------------------------------------------------------------

def test_cli_plot_from_flags_trace_and_plan(run_cli, tmp_path):
    trace, plan = tmp_path / "t.json", tmp_path / "plan.json"
    code, _, _ = run_cli("simulate", *SETUP, "--schedule", "roundpipe", "--trace", str(trace))
    assert code == 0
    assert run_cli("export", *SETUP, "--schedule", "roundpipe", "-o", str(plan))[0] == 0
    for argv, out in ((["--schedule", "roundpipe", *SETUP], "flags.png"),
                      (["--trace", str(trace)], "trace.svg"), (["--plan", str(plan)], "plan.pdf")):
        code, _, err = run_cli("plot", *argv, "-o", str(tmp_path / out))
        assert code == 0, err
        assert (tmp_path / out).stat().st_size > 1000
    # The plan simulates to the same trace as the one written.
    assert f"({len(json.loads(trace.read_text())['events'])} events)" in err


def test_cli_memory(run_cli, tmp_path):
    code, _, err = run_cli("plot", *SETUP, "--schedule", "1f1b", "--memory", "-o", str(tmp_path / "m.png"))
    assert code == 0 and (tmp_path / "m.png").read_bytes().startswith(b"\x89PNG"), err
    trace = tmp_path / "t.json"
    run_cli("simulate", *SETUP, "--schedule", "1f1b", "--trace", str(trace))
    code, _, err = run_cli("plot", "--trace", str(trace), "--memory", "-o", str(tmp_path / "m2.png"))
    assert code == 2 and "no memory timeline" in err and not (tmp_path / "m2.png").exists()


def test_cli_unknown_extension_exits_2_before_simulating(run_cli, tmp_path):
    code, _, err = run_cli("plot", *SETUP, "--schedule", "1f1b", "-o", str(tmp_path / "c.gif"))
    assert code == 2 and ".png, .svg, .pdf" in err and "simulating" not in err and "Traceback" not in err
    code, _, err = run_cli("compare", *SETUP, "--schedules", "1f1b", "--plot", str(tmp_path / "c.bmp"))
    assert code == 2 and ".png, .svg, .pdf" in err


def test_cli_plot_needs_an_input_and_an_output(run_cli, tmp_path):
    assert run_cli("plot", "-o", str(tmp_path / "c.png"))[0] == 2
    code, _, err = run_cli("plot", *SETUP, "--schedule", "1f1b")
    assert code == 2 and "-o FIGURE" in err


def test_cli_compare_plot(run_cli, tmp_path):
    out = tmp_path / "cmp.png"
    code, stdout, err = run_cli("compare", *SETUP, "--schedules", "1f1b,roundpipe", "--fidelity", "hop",
                                "--plot", str(out))
    assert code in (0, 1), err
    assert out.read_bytes().startswith(b"\x89PNG") and "roundpipe" in stdout


def test_split_backward_draws_i_and_w_distinctly(scenario):
    """A zero-bubble plan's chart: I and W bars in their own legend entries and colours, no B."""
    r = simulate(make_plan(scenario, PlanRequest("zb-h1")), scenario)
    fig = bubble_figure(r.trace, r.plan, r.metrics)
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert "backward (input grad)" in labels and "backward (weight grad)" in labels and "backward" not in labels
    colours = {t.get_text(): _handle_colour(h) for t, h in zip(legend.get_texts(), legend.legend_handles,
                                                                        strict=True)}
    assert colours["backward (input grad)"] != colours["backward (weight grad)"]
    drawn = {(gpu, lane): n for (_panel, gpu, lane), n in bar_counts(fig).items()}
    assert drawn == drawn_per_lane(r.trace)


def _handle_colour(handle) -> tuple:
    get = getattr(handle, "get_facecolor", None) or getattr(handle, "get_markerfacecolor", None) or handle.get_color
    return tuple(get()) if not isinstance(get(), str) else (get(),)
