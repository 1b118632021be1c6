"""A scenario: model, server, training setup and their per-layer costs (with a profile applied)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
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

    def to_setup(self) -> dict[str, Any]:
        """JSON-able record for plan.json, enough to rebuild this scenario."""
        training = asdict(self.training)
        training["lora_targets"] = list(training["lora_targets"])
        return {"model": asdict(self.model), "server": self.server_ref or self.server.name,
                "training": training, "profile": self.profile_ref}


def make_scenario(model: str | ModelSpec, gpus: str, training: TrainingSpec, profile: str | None = None) -> Scenario:
    spec = load_model(model) if isinstance(model, str) else model
    server = load_server(gpus)
    costs = model_costs(spec, training, server.gpu)
    prof = load_profile(profile) if profile else None
    if prof:
        costs = prof.apply(costs)
    return Scenario(spec, server, training, costs, prof, gpus, profile)


def scenario_from_setup(setup: dict[str, Any]) -> Scenario:
    """Inverse of Scenario.to_setup (for `rpsim simulate --plan`)."""
    from rpsim.errors import PlanError
    try:
        model = ModelSpec(**setup["model"])
        t = dict(setup["training"])
        t["lora_targets"] = tuple(t.get("lora_targets", ()))
        training = TrainingSpec(**t)
        return make_scenario(model, setup["server"], training, setup.get("profile"))
    except (KeyError, TypeError) as e:
        raise PlanError(f"plan $.setup: cannot rebuild the model, server and training setup ({e})") from None
