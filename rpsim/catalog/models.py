"""Model presets from models.toml, and Hugging Face config.json files given as paths."""
from __future__ import annotations

import sys
from dataclasses import fields, replace
from pathlib import Path

from rpsim.catalog.data import preset_table
from rpsim.catalog.hf_config import model_from_hf_dict
from rpsim.errors import SpecError, choices_message
from rpsim.jsonfile import read_json
from rpsim.specs.model import ModelSpec

_SPEC_KEYS = tuple(f.name for f in fields(ModelSpec) if f.name != "name")


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
    """Reads the file and prints the parser's warnings (keys it did not understand) on stderr."""
    config = read_json(path, "--model file", SpecError)
    if not isinstance(config, dict):
        raise SpecError(f"--model: {str(path)!r} must hold a JSON object")
    parsed = model_from_hf_dict(config, name=path.stem if path.stem != "config" else path.parent.name or "model")
    for warning in parsed.warnings:
        print(f"rpsim: warning: --model {path}: {warning}", file=sys.stderr)
    return parsed.spec


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
    if not changes:
        return model
    n_layers = changes.get("n_layers", model.n_layers)
    dense = tuple(i for i in model.dense_layers if i < n_layers)
    return replace(model, name=f"{model.name}[{suffix}]", dense_layers=dense, **changes)
