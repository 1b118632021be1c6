"""A scenario: model, server, training setup and their per-layer costs (with a profile applied)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from rpsim.catalog import load_model, load_server
from rpsim.costs import ModelCosts, Profile, load_profile, model_costs
from rpsim.specs import ModelSpec, ServerSpec, TrainingSpec


@dataclass(frozen=True)
class Scenario:
    model: ModelSpec
    server: ServerSpec
    training: TrainingSpec
    costs: ModelCosts
    profile: Profile | None = None
    server_ref: str = ""  # what --gpus said (a preset name, grammar, or topology path)
    profile_ref: str | None = None
    gpu_memory_bytes: float | None = None  # an override of the GPU's capacity (e.g. an H200 capped to 24 GiB)

    def to_setup(self) -> dict[str, Any]:
        """JSON-able record for plan.json, enough to rebuild this scenario."""
        training = asdict(self.training)
        training["lora_targets"] = list(training["lora_targets"])
        model = asdict(self.model)
        model["dense_layers"] = list(model["dense_layers"])
        return {"model": model, "server": self.server_ref or self.server.name,
                "training": training, "profile": self.profile_ref, "gpu_memory_bytes": self.gpu_memory_bytes}


def make_scenario(model: str | ModelSpec, gpus: str, training: TrainingSpec, profile: str | None = None,
                  gpu_memory_bytes: float | None = None) -> Scenario:
    spec = load_model(model) if isinstance(model, str) else model
    server = load_server(gpus)
    if gpu_memory_bytes:
        server = replace(server, gpu=replace(server.gpu, memory_bytes=gpu_memory_bytes))
    costs = model_costs(spec, training, server.gpu)
    prof = load_profile(profile) if profile else None
    if prof:
        costs = prof.apply(costs)
    return Scenario(spec, server, training, costs, prof, gpus, profile, gpu_memory_bytes)


def scenario_from_setup(setup: dict[str, Any], n_gpus: int | None = None) -> Scenario:
    """Inverse of Scenario.to_setup (for `rpsim simulate --plan`). With n_gpus (the plan's), the setup's
    server must have that many GPUs: the simulator would otherwise run lanes on GPUs the server lacks, or
    leave some of its GPUs out of the plan."""
    from rpsim.errors import PlanError
    memory = setup.get("gpu_memory_bytes")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, (int, float)) or not memory > 0):
        raise PlanError(f"plan $.setup.gpu_memory_bytes: expected null or a number > 0, got {memory!r}")
    for key in ("server", "profile"):  # absent: reported below with the rest of what is missing
        if setup.get(key) is not None and not isinstance(setup[key], str):
            raise PlanError(f"plan $.setup.{key}: expected a string, got {setup[key]!r}")
    try:
        model = ModelSpec(**setup["model"])
        t = dict(setup["training"])
        t["lora_targets"] = tuple(t.get("lora_targets", ()))
        training = TrainingSpec(**t)
        sc = make_scenario(model, setup["server"], training, setup.get("profile"), setup.get("gpu_memory_bytes"))
    except (KeyError, TypeError) as e:
        raise PlanError(f"plan $.setup: cannot rebuild the model, server and training setup ({e})") from None
    if n_gpus is not None and n_gpus != sc.server.n_gpus:
        raise PlanError(f"plan $.n_gpus is {n_gpus} but $.setup.server {setup['server']!r} has "
                        f"{sc.server.n_gpus} GPUs; they must match (export the plan again for this server)")
    return sc
