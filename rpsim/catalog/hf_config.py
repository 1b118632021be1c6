"""Hugging Face config.json -> ModelSpec, applying each model_type's defaults (those of its transformers
config class) and refusing or warning about keys that change the parameter count but are not understood.

Never a silent miscount: a key that is known to change the count in a way rpsim does not model is a
SpecError; a key rpsim does not know at all comes back as a warning for the caller to print.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rpsim.errors import SpecError
from rpsim.specs.model import ModelSpec

# Defaults of each family's transformers config class where a key may be absent from config.json, and
# the architecture facts no key states (Qwen2's q/k/v biases, Gemma-2's 4 norms, Qwen3's q/k norms).
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {},
    "mixtral": {"num_local_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": True},
    "qwen2": {"qkv_bias": True},  # Qwen2Attention: bias on q_proj, k_proj, v_proj, none on o_proj
    "qwen3": {"qk_norm": True},  # per-head RMSNorm on q and k; real configs state head_dim
    "qwen3_moe": {"qk_norm": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
                  "norm_topk_prob": False},
    # Gemma2Config: head_dim 256, tie_word_embeddings true; Gemma2DecoderLayer has input, post-attention,
    # pre-feedforward and post-feedforward RMSNorms (Gemma 2 report, arXiv 2408.00118, Sec. 2).
    "gemma2": {"head_dim": 256, "tie_word_embeddings": True, "norms_per_layer": 4},
    "phi3": {},  # fused qkv_proj and gate_up_proj: the same weights as separate q/k/v and gate/up
    "deepseek_v2": {"moe_layer_freq": 1, "first_k_dense_replace": 0, "norm_topk_prob": False},
}

# Keys that change no parameter count: positions, numerics, tokens, dropout, routing losses and choices,
# attention windows and soft-capping, serving hints.
NO_COUNT_KEYS = frozenset({
    "architectures", "model_type", "auto_map", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype",
    "dtype", "transformers_version", "use_cache", "rope_theta", "rope_scaling", "rope_parameters",
    "rms_norm_eps", "max_position_embeddings", "original_max_position_embeddings", "hidden_act",
    "hidden_activation", "initializer_range", "attention_dropout", "embd_pdrop", "resid_pdrop",
    "sliding_window", "sliding_window_size", "use_sliding_window", "max_window_layers", "layer_types",
    "cache_implementation", "attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar",
    "partial_rotary_factor", "pretraining_tp", "use_mrope", "router_aux_loss_coef", "output_router_logits",
    "router_jitter_noise", "aux_loss_alpha", "seq_aux", "topk_method", "n_group", "topk_group",
    "scoring_func", "routed_scaling_factor", "ep_size", "norm_topk_prob", "quantization_config",
    "attention_bias", "mlp_bias", "num_nextn_predict_layers", "_name_or_path", "is_decoder",
})

# Keys whose non-default value changes the count in a way rpsim does not model: refused.
UNSUPPORTED_VALUES: dict[str, tuple[Any, str]] = {
    "attention_bias": (False, "biases on q/k/v/o"),
    "mlp_bias": (False, "biases on the MLP projections"),
    "num_nextn_predict_layers": (0, "multi-token-prediction modules"),
}


@dataclass(frozen=True)
class HFModel:
    spec: ModelSpec
    warnings: tuple[str, ...]


class _Reader:
    """Typed access to a config dict that remembers which keys were read."""

    def __init__(self, config: dict[str, Any], name: str, defaults: dict[str, Any]) -> None:
        self.config, self.name, self.defaults, self.used = config, name, defaults, {"model_type"}

    def _raw(self, key: str, required: bool) -> Any:
        self.used.add(key)
        if key in self.config:
            return self.config[key]
        if key in self.defaults:
            return self.defaults[key]
        if required:
            raise SpecError(f"Hugging Face config {self.name!r} is missing the key {key!r}")
        return None

    def integer(self, key: str, required: bool = True, allow_null: bool = False, minimum: int = 1) -> int | None:
        value = self._raw(key, required)
        if value is None and (allow_null or not required):
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise SpecError(f"Hugging Face config {self.name!r}: {key} must be an integer >= {minimum}, "
                            f"got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._raw(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise SpecError(f"Hugging Face config {self.name!r}: {key} must be true or false, got {value!r}")
        return value

    def int_list(self, key: str) -> list[int]:
        value = self._raw(key, False) or []
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise SpecError(f"Hugging Face config {self.name!r}: {key} must be a list of layer indices, got {value!r}")
        return value


def model_from_hf_dict(config: dict[str, Any], name: str) -> HFModel:
    model_type = config.get("model_type")
    warnings = []
    if "text_config" in config:
        raise SpecError(f"Hugging Face config {name!r} nests its decoder in text_config (a multimodal "
                        "model); pass a config.json holding the text decoder's keys at the top level")
    if model_type not in FAMILIES:
        warnings.append(f"model_type {model_type!r} is not one rpsim knows ({', '.join(FAMILIES)}); counted "
                        "as a Llama-style decoder (GQA attention, SwiGLU MLP, 2 RMSNorms per layer)")
    family = FAMILIES.get(str(model_type), {})
    _refuse_unsupported(config, name)
    read = _Reader(config, name, family)
    fields = {**_attention_fields(read), **_mlp_fields(read)}
    spec = ModelSpec(
        name=name, vocab=read.integer("vocab_size"), n_layers=read.integer("num_hidden_layers"),
        tied_embeddings=read.flag("tie_word_embeddings", False), qkv_bias=bool(family.get("qkv_bias")),
        qk_norm=bool(family.get("qk_norm")), norms_per_layer=family.get("norms_per_layer", 2),
        source=f"Hugging Face config {name}", **fields)
    unknown = sorted(k for k in config if k not in read.used and k not in NO_COUNT_KEYS)
    if unknown:
        warnings.append(f"keys rpsim does not know were ignored: {', '.join(unknown)}; if one of them "
                        "changes the parameter count, rpsim's count is wrong")
    return HFModel(spec, tuple(warnings))


def _refuse_unsupported(config: dict[str, Any], name: str) -> None:
    for key, (default, what) in UNSUPPORTED_VALUES.items():
        if config.get(key, default) not in (default, None):
            raise SpecError(f"Hugging Face config {name!r}: {key} = {config[key]!r} adds {what}, which rpsim "
                            f"does not model; valid: {default!r} (or absent)")
    if config.get("shared_expert_intermediate_size"):
        raise SpecError(f"Hugging Face config {name!r}: shared_expert_intermediate_size (Qwen2-MoE's gated "
                        "shared expert) is not modelled; rpsim supports DeepSeek's n_shared_experts")


def _attention_fields(read: _Reader) -> dict[str, Any]:
    hidden, n_heads = read.integer("hidden_size"), read.integer("num_attention_heads")
    assert hidden is not None and n_heads is not None
    kv_lora_rank = read.integer("kv_lora_rank", required=False, minimum=0)
    if kv_lora_rank:
        # DeepSeek-V2 MLA: one key and value per head; a q/k head is qk_nope + qk_rope wide.
        rope = read.integer("qk_rope_head_dim")
        assert rope is not None
        read.used.add("num_key_value_heads")  # DeepSeek's MLA does not use it
        return {"hidden": hidden, "n_heads": n_heads, "n_kv_heads": n_heads, "kv_lora_rank": kv_lora_rank,
                "q_lora_rank": read.integer("q_lora_rank", allow_null=True, minimum=0) or 0, "qk_rope_head_dim": rope,
                "head_dim": (read.integer("qk_nope_head_dim") or 0) + rope, "v_head_dim": read.integer("v_head_dim")}
    head_dim = read.integer("head_dim", required=False) or hidden // n_heads
    return {"hidden": hidden, "n_heads": n_heads, "head_dim": head_dim,
            "n_kv_heads": read.integer("num_key_value_heads", required=False) or n_heads}


def _mlp_fields(read: _Reader) -> dict[str, Any]:
    """Dense SwiGLU, or routed experts (Mixtral: num_local_experts, Qwen3-MoE: num_experts, DeepSeek:
    n_routed_experts) with DeepSeek's shared experts and the layers that stay dense."""
    n_experts = (read.integer("n_routed_experts", required=False, minimum=0)
                 or read.integer("num_experts", required=False, minimum=0)
                 or read.integer("num_local_experts", required=False, minimum=0) or 1)
    if n_experts == 1:
        return {"mlp_width": read.integer("intermediate_size")}
    fields: dict[str, Any] = {"n_experts": n_experts, "n_active_experts": read.integer("num_experts_per_tok")}
    n_layers = read.integer("num_hidden_layers") or 0
    if "moe_intermediate_size" in read.config:
        fields["mlp_width"] = read.integer("moe_intermediate_size")
        dense_width = read.integer("intermediate_size", required=False)
    else:  # Mixtral: intermediate_size is each expert's width
        fields["mlp_width"], dense_width = read.integer("intermediate_size"), None
    fields["renormalize_topk"] = read.flag("norm_topk_prob", True)
    if "n_routed_experts" in read.config:  # DeepSeekMoE: layer i is MoE iff i >= k and i % freq == 0
        fields["n_shared_experts"] = read.integer("n_shared_experts", allow_null=True, minimum=0) or 0
        first_k, freq = read.integer("first_k_dense_replace", minimum=0), read.integer("moe_layer_freq") or 1
        dense = [i for i in range(n_layers) if i < (first_k or 0) or i % freq]
    else:  # Qwen3-MoE: layer i is MoE iff i is not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0
        step = read.integer("decoder_sparse_step", required=False, minimum=0) or 1
        only = read.int_list("mlp_only_layers")
        dense = [i for i in range(n_layers) if i in only or (i + 1) % step]
    if dense:
        if not dense_width:
            raise SpecError(f"Hugging Face config {read.name!r}: layers {dense} have a dense MLP but "
                            "intermediate_size is missing")
        fields["dense_layers"], fields["dense_mlp_width"] = tuple(dense), dense_width
    return fields
