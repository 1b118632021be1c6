"""search's fast backward working set (FastContext.backward_work, from per-layer tables) is the simulator's
backward walk (rpsim.sim.memory.backward_peak_bytes) with no gradients made, for every range."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.scenario import make_scenario
from rpsim.search.fast_context import context_of
from rpsim.sim.memory import backward_peak_bytes
from rpsim.specs import TrainingSpec

CTX = context_of(make_scenario("qwen3-1.7b", "4090x4", TrainingSpec(seq_len=2048, global_batch=32, mb_size=4)))


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(["stage", "layer"]))
def test_fast_backward_work_is_the_simulators_walk(data, grain):
    a = data.draw(st.integers(0, CTX.n_layers - 1))
    b = data.draw(st.integers(a + 1, CTX.n_layers))
    walk = backward_peak_bytes(list(CTX.act_max[a:b]), list(CTX.bwd_extra[a:b]), [0.0] * (b - a), grain)
    assert CTX.backward_work(a, b, grain == "layer") == pytest.approx(walk, rel=1e-12)


def test_with_the_head_on_top_the_peak_is_the_heads_loss_backward_over_every_saved_activation():
    """The head's backward holds no transient beyond its saved logits, so a stage topped by the head
    peaks at its activations alone; the estimate used to add a decoder layer's transient on top."""
    n = CTX.n_layers
    assert CTX.bwd_extra[n - 1] == 0 and max(CTX.bwd_extra[1:n]) > 0
    assert CTX.backward_work(1, n, False) == pytest.approx(CTX.act(1, n), rel=1e-12)
