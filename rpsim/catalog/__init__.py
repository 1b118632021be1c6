"""Presets (data files in this folder, each entry citing its source) and parsers for user files."""
from rpsim.catalog.gpus import gpu_names, load_gpu
from rpsim.catalog.models import load_model, model_names, published_params
from rpsim.catalog.servers import GPUS_GRAMMAR, load_server, server_names

__all__ = [
           "GPUS_GRAMMAR",
           "gpu_names",
           "load_gpu",
           "load_model",
           "load_server",
           "model_names",
           "published_params",
           "server_names",
]
