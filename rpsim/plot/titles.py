"""Names for figure titles: the model as published (its Hugging Face repository, which each preset's
source names) and the device as sold ("8x RTX 4090"), instead of the catalog's short keys."""
from __future__ import annotations

import re

from rpsim.specs import ModelSpec, ServerSpec

_REPO = re.compile(r"^[\w.-]+/(?P<name>[\w.-]+) config\.json")
_GPU = re.compile(r"^(?P<family>rtx|a|h|b|l)(?P<number>\d+)(?P<rest>.*)$")


def model_title(model: ModelSpec) -> str:
    """'Llama-2-70b-hf (llama-70b)'; a model from a config.json file, or shrunk by --model-override, keeps
    the name rpsim gave it (the override suffix says what changed)."""
    published = _REPO.match(model.source or "")
    if not published or "[" in model.name:
        return model.name
    name = published.group("name")
    return name if name.lower() == model.name.lower() else f"{name} ({model.name})"


def gpu_title(gpu_name: str) -> str:
    """'rtx4090' -> 'RTX 4090', 'h200-sxm' -> 'H200 SXM', 'a100-80g' -> 'A100 80G'."""
    m = _GPU.match(gpu_name)
    if not m:
        return gpu_name
    family = "RTX " if m.group("family") == "rtx" else m.group("family").upper()
    return f"{family}{m.group('number')}{m.group('rest').replace('-', ' ').upper()}"


def device_title(server: ServerSpec) -> str:
    return f"{server.n_gpus}x {gpu_title(server.gpu.name)}"
