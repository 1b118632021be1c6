"""The roundpipe library's first-iterations partition and what its forward stages hold (e02's max sequence)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.catalog import load_gpu, load_model
from rpsim.costs import model_costs
from rpsim.costs.library_memory import library_forward_peak_bytes, library_forward_stage_peak_bytes
from rpsim.partition.library_auto import library_warmup_partition
from rpsim.specs import TrainingSpec
from rpsim.units import GiB


def _layers(name: str, seq: int, recompute: str = "layer"):
    train = TrainingSpec(seq_len=seq, global_batch=10, mb_size=1, precision="fp16-acc16", recompute=recompute,
                         layer_impl="hf-fa2", loss_chunk_tokens=4096)
    return model_costs(load_model(name), train, load_gpu("4090")).layers


def test_qwen3_1_7b_warmup_partition_packs_by_weight_bytes():
    """Before any timing the library's estimates are layer bytes (forward) and 3x that (recompute +
    backward). Qwen3-1.7B ties its embedding: the embedding and the head each weigh 311M parameters, a
    layer 50M, so W = 3 x 311M x 2 B; the fused stage is the head alone (one more layer passes 1.1 W), the
    backward stages hold the embedding alone and then six layers (7 x 3 x 50M > 1.1 W), and the forward
    stages take 18 layers from the top (the budget W holds 18.5) and the other 10 with the embedding."""
    layers = _layers("qwen3-1.7b", 2048)
    part = library_warmup_partition([x.weight_bytes for x in layers], [x.grad_bytes for x in layers], 8, 24 * GiB)
    assert part.fwd == ((0, 11), (11, 29))
    assert part.bwd == ((0, 1), (1, 7), (7, 13), (13, 19), (19, 25), (25, 29), (29, 30))
    assert part.fused


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 10**9), min_size=3, max_size=40), st.integers(1, 8))
def test_warmup_partition_covers_every_layer_within_its_budget(weights, n_gpus):
    """Every stage is contiguous and covers the layers once (Partition checks), the fused stage ends at the
    last layer, and every stage but a single layer's stays within 1.1 x the largest one-layer estimate."""
    part = library_warmup_partition(weights, weights, n_gpus, 24 * GiB)
    w = max(3 * x for x in weights)
    assert part.bwd[-1][1] == len(weights)
    for lo, hi in part.fwd:
        assert hi - lo == 1 or sum(weights[lo:hi]) <= 1.1 * w * (1 + 1e-12)
    for lo, hi in part.bwd:
        assert hi - lo == 1 or 3 * sum(weights[lo:hi]) <= 1.1 * w * (1 + 1e-12)


def test_forward_stage_holds_one_layer_with_grad_and_two_microbatches_of_saved_inputs():
    """Layer grain, 10 microbatches: at the end of the 18-layer stage's last layer the GPU holds that
    layer's saved activations (grad enabled), this microbatch's 18 saved layer inputs and its output, the
    previous microbatch's as well (the memory manager frees them at this microbatch's output download),
    and the stage's weights. Qwen3-1.7B at the paper's 73K: 20.4 GiB."""
    layers = _layers("qwen3-1.7b", 74752)
    part = library_warmup_partition([x.weight_bytes for x in layers], [x.grad_bytes for x in layers], 8, 24 * GiB)
    boundary = 2.0 * 74752 * 2048
    expected = layers[28].activation_bytes + 2 * 19 * boundary + 18 * layers[1].weight_bytes
    assert library_forward_stage_peak_bytes(layers, part, 1, "layer", 10) == pytest.approx(expected, rel=1e-12)
    assert library_forward_peak_bytes(layers, part, "layer", 10) / GiB == pytest.approx(20.37, abs=0.01)
    # One microbatch per call: nothing lags behind.
    single = layers[28].activation_bytes + 19 * boundary + 18 * layers[1].weight_bytes
    assert library_forward_stage_peak_bytes(layers, part, 1, "layer", 1) == pytest.approx(single, rel=1e-12)


def test_stage_grain_saves_only_the_inputs_backward_stages_start_from():
    """recompute_grain="stage": save_input keeps a layer's input only where a backward stage starts
    (ModelTracker.backward_need_input); the warm-up plan's 6-layer backward stages start at 1, 7, 13, 19, 25,
    of which 13, 19 and 25 lie in the top forward stage (layers 11-28)."""
    layers = _layers("qwen3-1.7b", 8192, recompute="stage")
    part = library_warmup_partition([x.weight_bytes for x in layers], [x.grad_bytes for x in layers], 8, 24 * GiB)
    boundary = 2.0 * 8192 * 2048
    expected = layers[28].activation_bytes + 2 * (3 + 1) * boundary + 18 * layers[1].weight_bytes
    assert library_forward_stage_peak_bytes(layers, part, 1, "stage", 10) == pytest.approx(expected, rel=1e-12)
