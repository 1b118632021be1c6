"""The host STEP's cache-residency rule (rpsim.costs.cpu_optimizer): a tensor whose fp32 gradient and
scratch (8 B per parameter) fit the last-level cache reads only its staged 2 B from DRAM on its second and
later accumulation passes, and runs them at the host's cache-resident rate."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rpsim.costs.cpu_optimizer import (
    ADAM_AND_REFRESH_BYTES_PER_PARAM,
    CpuOptimizerRates,
    accumulation_dram_bytes,
    cache_resident_params,
)
from rpsim.costs.gemms import layer_params, layer_tensor_params
from rpsim.specs import ModelSpec

L3_300_MIB = 300 * 2**20  # the H200 hosts' lscpu "L3 cache: 300 MiB" (experiments/data/machines/*-lscpu.txt)
LLAMA3_8B = ModelSpec(name="llama3-8b", n_layers=32, hidden=4096, n_heads=32, n_kv_heads=8, head_dim=128,
                      mlp_width=14336, vocab=128256)
LLAMA_1_8B = ModelSpec(name="llama-1.8b", n_layers=16, hidden=3072, n_heads=24, n_kv_heads=8, head_dim=128,
                       mlp_width=8192, vocab=32000)


def test_llama3_8b_layer_keeps_its_attention_tensors_in_a_300_mib_cache_and_streams_its_mlp():
    tensors = layer_tensor_params(LLAMA3_8B, 0)
    # q, k, v, o, gate, up, down, then the two RMSNorm gains as one
    assert tensors == (4096 * 4096, 4096 * 1024, 4096 * 1024, 4096 * 4096,
                       4096 * 14336, 4096 * 14336, 14336 * 4096, 2 * 4096)
    assert sum(tensors) == layer_params(LLAMA3_8B, 0) == 218_112_000
    # an MLP tensor's gradient + scratch: 8 x 58,720,256 B = 470 MB > 315 MB; q/o: 134 MB; k/v: 34 MB
    resident = cache_resident_params(tensors, L3_300_MIB)
    assert resident == 2 * 16_777_216 + 2 * 4_194_304 + 8192 == 41_951_232
    streamed, widened, resident_bytes = accumulation_dram_bytes(218_112_000, 4, resident)
    assert widened == 0  # no widening rate measured: the first gradient is priced as a streamed pass
    # streamed tensors: 4 passes of 18 B; resident ones: a first pass of 18 B, then 3 of 2 B
    assert streamed == (4 * (218_112_000 - 41_951_232) + 41_951_232) * 18 == 13_438_697_472
    assert resident_bytes == 3 * 41_951_232 * 2 == 251_707_392
    rates = CpuOptimizerRates(adam_params_per_s=5e9, grad_accumulate_params_per_s=6e9,
                              resident_accumulate_params_per_s=12e9, last_level_cache_bytes=L3_300_MIB)
    assert rates.phase_bytes(218_112_000, 4, resident) == (13_438_697_472, 0, 251_707_392, 218_112_000 * 34)
    assert rates.step_s(218_112_000, 4, resident) == pytest.approx(
        218_112_000 / 5e9 + (4 * 218_112_000 - 3 * 41_951_232) / 6e9 + 3 * 41_951_232 / 12e9, rel=1e-12)


def test_every_llama_1_8b_decoder_tensor_fits_but_its_embedding_does_not():
    tensors = layer_tensor_params(LLAMA_1_8B, 3)
    assert max(tensors) == 3072 * 8192  # 8 x 25.2M = 201 MB of gradient + scratch
    assert cache_resident_params(tensors, L3_300_MIB) == sum(tensors) == 100_669_440
    assert cache_resident_params([32000 * 3072], L3_300_MIB) == 0  # 786 MB
    assert cache_resident_params(tensors, 0) == 0  # an unknown cache keeps every tensor streamed


tensor_lists = st.lists(st.integers(1, 10**9), min_size=1, max_size=12)


@given(tensor_lists, st.integers(0, 8), st.floats(0, 2e9), st.floats(0, 2e9))
def test_a_larger_cache_never_adds_dram_traffic(tensors, n_staged, cache_a, cache_b):
    small, large = sorted((cache_a, cache_b))
    params = sum(tensors)
    at = [sum(accumulation_dram_bytes(params, n_staged, cache_resident_params(tensors, c))) for c in (0, small, large)]
    assert at[0] >= at[1] >= at[2]
    assert at[0] == pytest.approx(max(n_staged, 1) * params * 18)  # no cache: today's streamed rule


@given(tensor_lists, st.integers(0, 8), st.floats(1e6, 2e9), st.floats(1e8, 1e11), st.floats(1.0, 10.0))
def test_cache_residency_only_matters_from_the_second_staged_gradient(tensors, n_staged, cache, rate, speedup):
    params = sum(tensors)
    streamed = CpuOptimizerRates(rate, rate)
    cached = CpuOptimizerRates(rate, rate, rate * speedup, cache)
    resident = cached.resident_params(tensors)
    alone_s, cached_s = streamed.step_s(params, n_staged), cached.step_s(params, n_staged, resident)
    if n_staged <= 1 or resident == 0:
        assert cached_s == pytest.approx(alone_s, rel=1e-12)
        assert cached.phase_bytes(params, n_staged, resident)[2] == 0
    assert cached_s <= alone_s * (1 + 1e-12)
    # without a measured resident rate a resident pass runs at the streamed one: only its DRAM bytes drop
    no_rate = CpuOptimizerRates(rate, rate, None, cache)
    assert no_rate.step_s(params, n_staged, resident) == pytest.approx(alone_s, rel=1e-12)
    assert no_rate.phase_bytes(params, n_staged, resident)[3] == params * ADAM_AND_REFRESH_BYTES_PER_PARAM


def test_simulated_steps_split_resident_and_streamed_tensors_by_the_hosts_cache(tmp_path):
    """A tiny model on a host with a 1 MiB cache: its 256 x 512 MLP tensors (8 x 131,072 B = 1 MiB) and
    attention tensors fit, and so does the head's final norm; its 1024 x 256 embedding and LM head (2 MiB)
do not. On a DRAM far wider than
    the optimizer's rates every STEP takes the closed form alone."""
    from tests.host_step_helpers import tiny_sync_steps
    rounds, steps = tiny_sync_steps(tmp_path, adam_params_per_s=1e7, grad_accumulate_params_per_s=2e7,
                                    grad_accumulate_resident_params_per_s=5e7, last_level_cache_mib=1.0)
    assert steps and rounds > 1
    seen = set()
    for e, layer in steps:
        p = layer.trainable_params
        resident = {"layer": p, "embed": 0, "head": 256}[layer.kind]  # the head's final norm gain fits
        seen.add(layer.kind)
        expected = p / 1e7 + (rounds * p - (rounds - 1) * resident) / 2e7 + (rounds - 1) * resident / 5e7
        assert e.end_s - e.start_s == pytest.approx(expected, rel=1e-6)
    assert seen == {"embed", "layer", "head"}


def test_a_measured_widening_prices_every_tensors_first_gradient_as_a_6_byte_copy():
    """rpexec.step_loops widens the first staged gradient straight into the fp32 gradient (read 2 B, write
    4 B); the later ones go through the scratch (18 B streamed, 2 B resident)."""
    tensors = layer_tensor_params(LLAMA3_8B, 0)
    rates = CpuOptimizerRates(adam_params_per_s=5e9, grad_accumulate_params_per_s=6e9,
                              resident_accumulate_params_per_s=12e9, last_level_cache_bytes=L3_300_MIB,
                              widen_params_per_s=11e9)
    p, r = 218_112_000, 41_951_232
    assert rates.resident_params(tensors) == r
    assert rates.phase_bytes(p, 4, r) == (3 * (p - r) * 18, p * 6, 3 * r * 2, p * 34)
    assert rates.step_s(p, 4, r) == pytest.approx(p / 5e9 + p / 11e9 + 3 * (p - r) / 6e9 + 3 * r / 12e9, rel=1e-12)
    assert rates.step_s(p, 1, r) == pytest.approx(p / 5e9 + p / 11e9, rel=1e-12)
