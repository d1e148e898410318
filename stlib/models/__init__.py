"""Registered models: ``create_model(name, ...)``, ``list_models(pattern)``.

Importing this package registers every model file below.
"""
from . import spikformer  # noqa: F401  (registers the Spikformer factories)
from ._registry import MODELS, create_model, list_models, model_arguments, register_model

__all__ = ["MODELS", "create_model", "list_models", "model_arguments", "register_model"]
