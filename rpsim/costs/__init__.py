"""Per-layer costs (FLOPs, bytes, seconds) of a model under a training setup on a GPU. Pure functions."""
from rpsim.costs.layer_costs import LayerCost, ModelCosts, model_costs
from rpsim.costs.profile import Profile, load_profile

__all__ = ["LayerCost", "ModelCosts", "Profile", "load_profile", "model_costs"]
