"""Model presets from models.toml, and Hugging Face config.json files given as paths."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from rpsim.catalog.data import preset_table
from rpsim.errors import SpecError, choices_message
from rpsim.jsonfile import read_json
from rpsim.specs.model import ModelSpec

_SPEC_KEYS = ("n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "mlp_width", "vocab",
              "tied_embeddings", "n_experts", "n_active_experts", "qk_norm", "source")


def model_names() -> list[str]:
    return list(preset_table("models.toml"))


def published_params(name: str) -> tuple[float, float | None]:
    """(total, active) parameter counts as published, for tests and reports."""
    e = preset_table("models.toml")[name]
    active = e.get("active_params_b")
    return e["params_b"] * 1e9, (active * 1e9 if active else None)


def load_model(name_or_path: str) -> ModelSpec:
    table = preset_table("models.toml")
    if name_or_path in table:
        e = table[name_or_path]
        return ModelSpec(name=name_or_path, **{k: v for k, v in e.items() if k in _SPEC_KEYS})
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return model_from_hf_config(path)
    raise SpecError(choices_message("model", name_or_path, table) + " (or a path to a config.json)")


def model_from_hf_config(path: Path) -> ModelSpec:
    config = read_json(path, "--model file", SpecError)
    if not isinstance(config, dict):
        raise SpecError(f"--model: {str(path)!r} must hold a JSON object")
    return model_from_hf_dict(config, name=path.stem if path.stem != "config" else path.parent.name or "model")


def model_from_hf_dict(config: dict[str, Any], name: str) -> ModelSpec:
    def need(*keys: str) -> Any:
        for key in keys:
            if key in config:
                return config[key]
        raise SpecError(f"Hugging Face config {name!r} is missing the key {' or '.join(repr(k) for k in keys)}")

    n_heads = need("num_attention_heads")
    hidden = need("hidden_size")
    n_experts = config.get("num_experts") or config.get("num_local_experts") or 1
    mlp_key = ("moe_intermediate_size", "intermediate_size") if n_experts > 1 else ("intermediate_size",)
    return ModelSpec(
        name=name,
        n_layers=need("num_hidden_layers"),
        hidden=hidden,
        n_heads=n_heads,
        n_kv_heads=config.get("num_key_value_heads") or n_heads,
        head_dim=config.get("head_dim") or hidden // n_heads,
        mlp_width=need(*mlp_key),
        vocab=need("vocab_size"),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        n_experts=n_experts,
        n_active_experts=config.get("num_experts_per_tok", 1) if n_experts > 1 else 1,
        qk_norm=str(config.get("model_type", "")).startswith("qwen3"),
        source=f"Hugging Face config {name}",
    )


OVERRIDABLE = ("n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "mlp_width", "vocab", "n_experts",
               "n_active_experts")


def override_model(model: ModelSpec, text: str) -> ModelSpec:
    """`--model-override n_layers=4,hidden=512`: shrink a preset to fit a machine (the name records it)."""
    changes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in OVERRIDABLE:
            raise SpecError(f"--model-override: unknown field {key!r}; valid choices: {', '.join(OVERRIDABLE)}")
        try:
            changes[key] = int(value)
        except ValueError:
            raise SpecError(f"--model-override: {key} needs an integer, got {value!r}") from None
    suffix = ",".join(f"{k}={v}" for k, v in changes.items())
    return replace(model, name=f"{model.name}[{suffix}]", **changes) if changes else model
