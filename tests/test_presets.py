"""Model presets reproduce their published parameter counts (models.md)."""
from __future__ import annotations

import pytest

from rpsim.catalog import load_gpu, load_model, model_names, published_params
from rpsim.costs import model_costs
from rpsim.specs import TrainingSpec


@pytest.mark.parametrize("name", model_names())
def test_parameter_count_within_half_percent(name):
    costs = model_costs(load_model(name), TrainingSpec(), load_gpu("rtx4090"))
    published, _ = published_params(name)
    assert costs.total_params == pytest.approx(published, rel=0.005)


def test_qwen3_235b_active_params():
    costs = model_costs(load_model("qwen3-235b-a22b"), TrainingSpec(), load_gpu("rtx4090"))
    assert costs.total_params == pytest.approx(235e9, rel=0.01)
    assert costs.active_params == pytest.approx(22e9, rel=0.02)


def test_tied_embeddings_count_once_but_head_holds_the_matrix():
    m = load_model("qwen3-1.7b")
    costs = model_costs(m, TrainingSpec(), load_gpu("rtx4090"))
    head = costs.layers[-1]
    assert head.params == m.hidden
    assert head.weight_bytes == 2 * (m.hidden + m.vocab * m.hidden)


def test_every_gpu_preset_loads_with_source():
    for alias in ("4090", "3090", "5090", "a100", "a800", "h100", "h200"):
        g = load_gpu(alias)
        assert g.source and g.memory_bytes > 0 and g.bf16_flops_per_s > 0
