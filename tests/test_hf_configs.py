"""Real Hugging Face config.json files (tests/data/hf_configs) count to their published parameter totals;
keys that change the count and are not understood are refused or warned about, never ignored silently."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rpsim.catalog import load_gpu, load_model
from rpsim.catalog.hf_config import model_from_hf_dict
from rpsim.cli.main import main as rpsim_main
from rpsim.costs import model_costs
from rpsim.costs.gemms import layer_params
from rpsim.errors import SpecError
from rpsim.specs import TrainingSpec

CONFIGS = Path(__file__).parent / "data" / "hf_configs"

# (file, published total, published active or None, decimals of the published figure in billions, source)
PUBLISHED = [
    ("Meta-Llama-3-8B", 8.03, None, 2, "meta-llama/Meta-Llama-3-8B page: 8.03B params"),
    ("Meta-Llama-3-70B", 70.6, None, 1, "meta-llama/Meta-Llama-3-70B page: 70.6B params"),
    ("Mistral-7B-v0.1", 7.24, None, 2, "mistralai/Mistral-7B-v0.1 page: 7.24B params"),
    ("Mixtral-8x7B-v0.1", 46.7, 13, 1, "Mixtral paper arXiv 2401.04088: 13B active; model page: 46.7B"),
    ("Qwen2.5-7B", 7.61, None, 2, "Qwen/Qwen2.5-7B card: 7.61B, 6.53B non-embedding"),
    ("Qwen3-8B", 8.2, None, 1, "Qwen/Qwen3-8B card: 8.2B, 6.95B non-embedding"),
    ("Qwen3-30B-A3B", 30.5, 3.3, 1, "Qwen/Qwen3-30B-A3B card: 30.5B total, 3.3B activated"),
    ("gemma-2-2b", 2.61, None, 2, "google/gemma-2-2b page: 2.61B params"),
    ("gemma-2-9b", 9.24, None, 2, "google/gemma-2-9b page: 9.24B params"),
    ("Phi-3-mini-4k-instruct", 3.8, None, 1, "Phi-3 report arXiv 2404.14219: 3.8B"),
    ("DeepSeek-V2-Lite", 15.7, None, 1, "DeepSeek-V2 paper arXiv 2405.04434 App. B: 15.7B total"),
    ("DeepSeek-V2", 236, 21, 0, "DeepSeek-V2 paper arXiv 2405.04434 abstract: 236B total, 21B activated"),
]

# Cards that state a non-embedding count (total less the embedding matrix and an untied LM head).
NON_EMBEDDING = {
    "Qwen2.5-7B": (6.53, 2), "Qwen3-8B": (6.95, 2), "Qwen3-30B-A3B": (29.9, 1),
    # Gemma 2 report (arXiv 2408.00118) Table 2 gives exact figures.
    "gemma-2-2b": (2_024_517_888, None), "gemma-2-9b": (8_324_201_984, None),
}


def states(count: float, published: float, decimals: int) -> bool:
    """A card's figure in billions, rounded or (Qwen2.5's 7.61B for 7.6156B) truncated to its digits."""
    scaled = count / 1e9 * 10**decimals
    return published in (round(scaled) / 10**decimals, math.floor(scaled) / 10**decimals)


def costs_of(name: str):
    return model_costs(load_model(str(CONFIGS / f"{name}.json")), TrainingSpec(seq_len=64, global_batch=1, mb_size=1),
                       load_gpu("rtx4090"))


@pytest.mark.parametrize("name, total_b, active_b, decimals, source", PUBLISHED)
def test_config_counts_to_the_published_total(name, total_b, active_b, decimals, source, capsys):
    costs = costs_of(name)
    assert states(costs.total_params, total_b, decimals), source
    if active_b is not None:
        assert states(costs.active_params, active_b, 0 if isinstance(active_b, int) else decimals), source
    assert "warning" not in capsys.readouterr().err, "a real config must be fully understood"


@pytest.mark.parametrize("name", sorted(NON_EMBEDDING))
def test_non_embedding_counts_match_the_cards(name):
    m = load_model(str(CONFIGS / f"{name}.json"))
    embedding = m.vocab * m.hidden * (1 if m.tied_embeddings else 2)
    non_embedding = costs_of(name).total_params - embedding
    published, decimals = NON_EMBEDDING[name]
    if decimals is None:
        assert non_embedding == published
    else:
        assert states(non_embedding, published, decimals)


def test_deepseek_v2_lite_by_the_paper_formulas():
    """DeepSeek-V2 Sec. 2.1.2 (MLA with a full-rank query for Lite) and 2.2 (2 shared + 64 routed experts
    of 1408, top-6; layer 0 dense, first_k_dense_replace = 1), term by term."""
    m = load_model(str(CONFIGS / "DeepSeek-V2-Lite.json"))
    h, heads = 2048, 16
    attention = (h * heads * (128 + 64)          # W^Q (no q_lora_rank)
                 + h * (512 + 64) + 512          # W^DKV with the shared RoPE key W^KR, and c_KV's RMSNorm
                 + 512 * heads * (128 + 128)     # W^UK and W^UV
                 + heads * 128 * h)              # W^O
    expert = 3 * h * 1408
    moe = 64 * expert + 2 * expert + 64 * h      # routed, shared, router
    assert layer_params(m, 0) == attention + 2 * h + 3 * h * 10944
    assert layer_params(m, 1) == attention + 2 * h + moe
    assert layer_params(m, 1, active_only=True) == attention + 2 * h + 8 * expert + 64 * h
    costs = costs_of("DeepSeek-V2-Lite")
    assert costs.total_params == 15_706_484_224
    # Activated per token, counting the LM head but not the input embedding table (a lookup, no FLOPs):
    # 2,451,435,008, which the paper gives as 2.4B (truncated; rounding gives 2.5). Counting the embedding
    # table too, as rpsim's active_params does for every model, gives 2.66B.
    without_lookup = costs.active_params - m.vocab * m.hidden
    assert without_lookup == 2_451_435_008 and math.floor(without_lookup / 1e8) / 10 == 2.4


def test_deepseek_forward_flops_and_saved_activations_follow_the_layer_shapes():
    """A MoE layer's forward FLOPs: 2·T per weight a token passes (its 6 routed + 2 shared experts, the
    router, MLA's projections) plus causal attention T·s·heads·(192 + 128) (half the score matrix, as
    timed; gemms.attention_flops); saved activations name each tensor."""
    m = load_model(str(CONFIGS / "DeepSeek-V2-Lite.json"))
    # T·6/64 tokens per expert is exact; the paper's count of saved tensors (rpsim.costs.activations)
    train = TrainingSpec(seq_len=4096, global_batch=64, mb_size=64, layer_impl="paper")
    layer = model_costs(m, train, load_gpu("rtx4090")).layers[2]
    t, s = train.mb_tokens, train.seq_len
    per_token_weights = layer_params(m, 1, active_only=True) - (2 * 2048 + 512)  # norms are not GEMMs
    assert layer.forward_flops == 2 * t * per_token_weights + 64 * s * s * 16 * (192 + 128)
    saved = (4 * 2048 + 16 * 192 * 2 + 16 * 128 * 2 + (512 + 64) + 512) * 2 * t + 6 * t * 1408 * 8
    assert layer.activation_bytes == saved


def test_gemma2_defaults_to_tied_embeddings_and_four_norms():
    config = json.loads((CONFIGS / "gemma-2-2b.json").read_text())
    assert "tie_word_embeddings" not in config
    m = model_from_hf_dict(config, "gemma-2-2b").spec
    assert m.tied_embeddings and m.norms_per_layer == 4
    untied = model_from_hf_dict({**config, "tie_word_embeddings": False}, "g").spec
    assert not untied.tied_embeddings


def test_qwen2_counts_its_qkv_biases():
    config = json.loads((CONFIGS / "Qwen2.5-7B.json").read_text())
    qwen2 = model_from_hf_dict(config, "q").spec
    llama = model_from_hf_dict({**config, "model_type": "llama"}, "q").spec
    assert layer_params(qwen2, 0) - layer_params(llama, 0) == 3584 + 2 * 512


def test_qwen3_moe_dense_layers_from_mlp_only_layers_and_sparse_step():
    base = json.loads((CONFIGS / "Qwen3-30B-A3B.json").read_text())
    m = model_from_hf_dict({**base, "mlp_only_layers": [0, 5], "decoder_sparse_step": 2}, "q").spec
    assert m.dense_layers == tuple(sorted({0, 5} | set(range(0, 48, 2))))
    assert layer_params(m, 0) - layer_params(m, 1) == 3 * 2048 * 6144 - (128 * 3 * 2048 * 768 + 128 * 2048)


@pytest.mark.parametrize("key, value", [("attention_bias", True), ("mlp_bias", True),
                                        ("num_nextn_predict_layers", 1), ("shared_expert_intermediate_size", 5632)])
def test_count_changing_keys_rpsim_does_not_model_are_refused(tmp_path, key, value, capsys):
    config = {**json.loads((CONFIGS / "Meta-Llama-3-8B.json").read_text()), key: value}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    code = rpsim_main(["simulate", "--model", str(path), "--gpus", "4090x2", "--schedule", "1f1b", "--seq", "128",
                       "--global-batch", "8"])
    err = capsys.readouterr().err
    assert code == 2 and key in err and "Traceback" not in err


def test_unknown_keys_and_model_types_are_warned_about(tmp_path, capsys):
    config = {**json.loads((CONFIGS / "Meta-Llama-3-8B.json").read_text()), "model_type": "olmo2",
              "num_extra_heads": 4}
    parsed = model_from_hf_dict(config, "x")
    assert any("olmo2" in w for w in parsed.warnings)
    assert any("num_extra_heads" in w for w in parsed.warnings)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    load_model(str(path))
    assert "num_extra_heads" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"hidden_size": "2048"}, {"kv_lora_rank": 512.0}, {"mlp_only_layers": "0"},
                                 {"tie_word_embeddings": "yes"}, {"num_hidden_layers": 0},
                                 {"num_experts_per_tok": -1}])
def test_wrongly_typed_values_are_spec_errors(bad):
    config = {**json.loads((CONFIGS / "Qwen3-30B-A3B.json").read_text()), **bad}
    with pytest.raises(SpecError, match=next(iter(bad))):
        model_from_hf_dict(config, "x")


@pytest.mark.parametrize("preset, config", [("deepseek-v2-lite", "DeepSeek-V2-Lite"),
                                            ("mixtral-8x7b", "Mixtral-8x7B-v0.1"), ("gemma-2-9b", "gemma-2-9b")])
def test_new_presets_equal_their_configs(preset, config):
    from dataclasses import replace
    from_preset, from_config = load_model(preset), load_model(str(CONFIGS / f"{config}.json"))
    assert replace(from_preset, name="m", source="") == replace(from_config, name="m", source="")


def test_lora_adapts_mla_projections_and_every_expert_but_not_the_router():
    """LoRA groups on MLA: q (W^Q), k (the down-projection W^DKV + W^KR), v (the up-projection W^UK, W^UV),
    o; gate/up/down on each routed expert and on the shared experts."""
    from rpsim.costs.gemms import lora_params
    m = load_model("deepseek-v2-lite")
    r = 8
    train = TrainingSpec(mode="lora", lora_rank=r)
    attention = r * ((2048 + 16 * 192) + (2048 + 576) + (512 + 16 * 256) + (16 * 128 + 2048))
    swiglu = 3 * r * (2048 + 1408)
    assert lora_params(m, train, 1) == attention + 64 * swiglu + 3 * r * (2048 + 2 * 1408)
    assert lora_params(m, train, 0) == attention + 3 * r * (2048 + 10944)


def test_model_override_keeps_only_the_dense_layers_that_remain():
    from rpsim.catalog.models import override_model
    m = override_model(load_model("deepseek-v2-lite"), "n_layers=2,n_experts=8")
    assert m.dense_layers == (0,) and m.n_layers == 2 and m.n_experts == 8
