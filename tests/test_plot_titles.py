"""What the CLI's figures say: published model and device names in the titles, how many iterations each
comparison panel draws (and where each ends), and the key to the <stage><kind><mb> bar labels."""
from __future__ import annotations

from matplotlib.text import Text

from rpsim.catalog import load_model
from rpsim.catalog.servers import load_server
from rpsim.compare import run_one
from rpsim.planner import PlanRequest
from rpsim.plot.bubble_figure import bubble_figure
from rpsim.plot.compare_figure import compare_figure
from rpsim.plot.labels import LABEL_KEY
from rpsim.plot.titles import device_title, gpu_title, model_title
from rpsim.scenario import make_scenario
from rpsim.specs import TrainingSpec


def texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible()]


def test_published_names():
    assert model_title(load_model("llama3-8b")) == "Llama-3.1-8B (llama3-8b)"
    assert model_title(load_model("qwen3-1.7b")) == "Qwen3-1.7B"
    assert gpu_title("rtx4090") == "RTX 4090" and gpu_title("h200-sxm") == "H200 SXM"
    assert device_title(load_server("roundpipe-4090x8")) == "8x RTX 4090"


def _rows():
    sc = make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(seq_len=512, global_batch=8, mb_size=1))
    return sc, [run_one(sc, PlanRequest(s, fidelity="ideal")) for s in ("roundpipe", "gpipe")]


def test_compare_figure_labels_iterations_names_and_stage_labels():
    sc, rows = _rows()
    fig = compare_figure(rows, sc)
    all_text = texts(fig)
    assert "Qwen3-1.7B on 4x RTX 4090" in fig.get_suptitle()
    assert LABEL_KEY in all_text
    for row in rows:
        n_iters = row.result.plan.n_iters
        head = next(t for t in all_text if t.startswith(f"{row.metrics['schedule']}:"))
        assert head.endswith(f"{n_iters} iteration{'s' if n_iters != 1 else ''} drawn"), head
    assert rows[0].result.plan.n_iters > 1  # async RoundPipe draws several: each end is labelled
    assert sum(t.startswith("it ") for t in all_text) == sum(r.result.plan.n_iters for r in rows)


def test_bubble_figure_title_names_model_and_device():
    sc, rows = _rows()
    res = rows[1].result
    fig = bubble_figure(res.trace, res.plan, res.metrics, sc=sc)
    assert "Qwen3-1.7B on 4x RTX 4090" in fig.get_suptitle()
    assert LABEL_KEY in texts(fig)


def test_memory_figure_title_names_model_and_device():
    from rpsim.plot.memory_figure import memory_figure
    sc, rows = _rows()
    fig = memory_figure(rows[0].result, sc)
    assert "Qwen3-1.7B, 4x RTX 4090" in fig.get_suptitle()
