"""Exporters that write plans in other tools' formats (torch pipelining CSV); they never import torch."""
