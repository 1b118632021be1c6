"""rpsim.sim.memory.backward_peak_bytes: the most a backward over one stage holds, walking its layers from
the top as autograd does (saved activations freed layer by layer, gradients made layer by layer)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpsim.sim.memory import backward_peak_bytes

GRAINS = ("stage", "layer", "kept")


def test_head_on_top_peaks_at_the_loss_backward_without_a_layer_transient():
    # Two layers (saved 10, transient 3) under a head whose loss backward holds 50: the head's moment
    # holds everything saved (70); a layer's moment comes after the head freed its 50.
    assert backward_peak_bytes([10, 10, 50], [3, 3, 0], [0, 0, 0], "stage") == 70


def test_uniform_layers_peak_at_the_top_layers_transient():
    assert backward_peak_bytes([10, 10, 10], [3, 3, 3], [0, 0, 0], "stage") == 33


def test_gradients_made_before_a_layer_count_at_that_layer():
    # Top first: layer 2 holds 30 + 3; layer 1 holds 20 + 3 + layer 2's gradient 15 = 38; layer 0 holds
    # 10 + 3 + 30 = 43: with gradients larger than activations the walk's end is its peak.
    assert backward_peak_bytes([10, 10, 10], [3, 3, 3], [15, 15, 15], "stage") == 43
    # Layer grain: one layer's activations at a time, the gradients above it already made.
    assert backward_peak_bytes([10, 10, 10], [3, 3, 3], [15, 15, 15], "layer") == 10 + 3 + 30


def test_kept_activations_add_only_gradients_beyond_what_the_layers_above_freed():
    assert backward_peak_bytes([10, 20, 10], [5, 5, 5], [0, 0, 0], "kept") == 20
    # Gradients of 25 per layer against 10-20 freed above: at layer 0, 50 - 30 = 20 more than the largest.
    assert backward_peak_bytes([10, 20, 10], [5, 5, 5], [25, 25, 25], "kept") == 20 + 20


layers = st.integers(1, 6).flatmap(lambda n: st.tuples(
    *(st.lists(st.floats(0, 1e9, allow_nan=False), min_size=n, max_size=n) for _ in range(3))))


@given(layers)
def test_without_gradients_a_whole_stage_holds_between_its_activations_and_the_old_bound(xs):
    saved, extra, _ = xs
    peak = backward_peak_bytes(saved, extra, [0.0] * len(saved), "stage")
    assert sum(saved) + extra[-1] <= peak * (1 + 1e-12) + 1e-6  # the top layer's moment
    assert peak <= (sum(saved) + max(extra)) * (1 + 1e-12) + 1e-6  # every activation and the largest transient


@given(layers, st.sampled_from(GRAINS))
def test_gradients_raise_the_peak_by_at_most_those_of_the_layers_above_the_bottom(xs, grain):
    saved, extra, grads = xs
    without = backward_peak_bytes(saved, extra, [0.0] * len(saved), grain)
    with_grads = backward_peak_bytes(saved, extra, grads, grain)
    assert without <= with_grads * (1 + 1e-12) + 1e-6
    assert with_grads <= (without + sum(grads[1:])) * (1 + 1e-12) + 1e-6


@given(layers)
def test_one_layer_at_a_time_never_holds_more_than_the_whole_stage(xs):
    saved, extra, grads = xs
    layer, stage = (backward_peak_bytes(saved, extra, grads, g) for g in ("layer", "stage"))
    assert layer <= stage * (1 + 1e-12) + 1e-6
