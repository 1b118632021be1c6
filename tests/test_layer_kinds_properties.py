"""Properties over generated configs of every supported family: the executor's layers hold exactly the
parameters rpsim counts, and each layer's forward FLOPs are 2·T per weight a token passes plus attention."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpsim.catalog import load_gpu
from rpsim.catalog.hf_config import model_from_hf_dict
from rpsim.costs import model_costs
from rpsim.costs.gemms import attention_flops, layer_norm_params, layer_params
from rpsim.specs import TrainingSpec

torch = pytest.importorskip("torch")

from rpexec.model import skeleton_layers


@st.composite
def configs(draw):
    family = draw(st.sampled_from(["llama", "qwen2", "qwen3", "gemma2", "mixtral", "qwen3_moe", "deepseek_v2"]))
    kv_heads = draw(st.integers(1, 3))
    heads = kv_heads * draw(st.integers(1, 3))
    n_layers = draw(st.integers(1, 4))
    config = {"model_type": family, "num_hidden_layers": n_layers, "hidden_size": draw(st.integers(4, 40)),
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": 50,
              "intermediate_size": draw(st.integers(4, 40)), "head_dim": 2 * draw(st.integers(1, 8)),
              "tie_word_embeddings": False}
    if family in ("mixtral", "qwen3_moe", "deepseek_v2"):
        experts = draw(st.integers(2, 6))
        config.update({"num_experts_per_tok": draw(st.integers(1, experts)), "moe_intermediate_size": 8})
        config["num_local_experts" if family == "mixtral" else "num_experts"] = experts
    if family == "qwen3_moe":
        config.update({"decoder_sparse_step": draw(st.integers(1, 2)),
                       "mlp_only_layers": draw(st.lists(st.integers(0, n_layers - 1), max_size=2))})
    if family == "deepseek_v2":
        config["n_routed_experts"] = config.pop("num_experts")
        config.update({"num_key_value_heads": heads, "kv_lora_rank": draw(st.integers(2, 12)),
                       "q_lora_rank": draw(st.sampled_from([None, 6])), "qk_nope_head_dim": draw(st.integers(1, 8)),
                       "qk_rope_head_dim": 2 * draw(st.integers(1, 3)), "v_head_dim": draw(st.integers(1, 8)),
                       "n_shared_experts": draw(st.integers(0, 2)), "first_k_dense_replace": draw(st.integers(0, 2)),
                       "moe_layer_freq": draw(st.integers(1, 2))})
    return config


@settings(max_examples=40, deadline=None)
@given(configs())
def test_executor_layers_hold_the_parameters_rpsim_counts(config):
    m = model_from_hf_dict(config, "generated").spec
    layers = skeleton_layers(m)[1:-1]
    assert [sum(p.numel() for p in layer.parameters()) for layer in layers] == \
        [layer_params(m, i) for i in range(m.n_layers)]


@settings(max_examples=40, deadline=None)
@given(configs())
def test_forward_flops_are_two_per_weight_per_token_plus_attention(config):
    m = model_from_hf_dict(config, "generated").spec
    train = TrainingSpec(seq_len=8 * m.n_experts, global_batch=2, mb_size=2)  # T·k/E rows per expert, exact
    costs = model_costs(m, train, load_gpu("rtx4090"))
    biases = m.q_width + m.kv_width + m.v_width if m.qkv_bias else 0
    for i, layer in enumerate(costs.layers[1:-1]):
        gemm_weights = layer_params(m, i, active_only=True) - layer_norm_params(m) - biases
        assert layer.forward_flops == 2 * train.mb_tokens * gemm_weights + attention_flops(m, train)
