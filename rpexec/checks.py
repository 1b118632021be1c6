"""Refuse a plan that does not match the model or the machine before any work starts."""
from __future__ import annotations

import torch

from rpsim.errors import PlanError, SpecError
from rpsim.ir import Plan
from rpsim.specs import ModelSpec

SUPPORTED_KINDS = {"F", "B", "FB", "I", "W", "LOAD", "FREE", "OFFLOAD", "ACT_OUT", "ACT_IN", "SEND", "RECV", "STEP"}


def model_and_shape(plan: Plan) -> tuple[ModelSpec, int, int, str]:
    setup = plan.setup
    try:
        model = ModelSpec(**setup["model"])
        t = setup["training"]
        return model, int(t["seq_len"]), int(t["mb_size"]), str(t.get("precision", "bf16"))
    except (KeyError, TypeError) as e:
        raise PlanError(f"plan $.setup: needs model and training to run ({e}); export plans with rpsim export") from None


def check_machine(plan: Plan, model: ModelSpec, device: str, seq: int, mb_size: int, dtype: str) -> None:
    if plan.level != "pcie":
        raise PlanError(f"plan level is {plan.level!r}; rpexec runs lowered plans (rpsim export --fidelity pcie)")
    kinds = {a.kind for _, _, a in plan.items()}
    if kinds - SUPPORTED_KINDS:
        raise PlanError(f"rpexec cannot run {sorted(kinds - SUPPORTED_KINDS)} actions; it runs {sorted(SUPPORTED_KINDS)}")
    if model.tied_embeddings:
        raise SpecError("rpexec does not run tied embeddings yet (the head and embedding would update one "
                        "matrix from two stages); untie them (tie_word_embeddings: false)")
    if model.n_pipeline_layers != plan.partition.n_layers:
        raise PlanError(f"plan partitions {plan.partition.n_layers} pipeline layers; the model has "
                        f"{model.n_pipeline_layers}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SpecError("--device cuda: no CUDA device is available; valid choices here: cpu")
        have = torch.cuda.device_count()
        if have < plan.n_gpus:
            raise SpecError(f"plan needs {plan.n_gpus} GPUs; this machine has {have}")
