"""Registered models: ``create_model(name, ...)``, ``list_models(pattern)``.

Every module in this package is imported here, so a new model file registers itself by
being added (one file per architecture, factories decorated with ``@register_model``).
"""
import importlib
import pkgutil

from ._registry import (MODELS, create_model, list_models, model_arguments, published_checkpoint,
                        register_model)
from .official_weights import CheckpointError, load_official

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MODELS", "CheckpointError", "create_model", "list_models", "load_official",
           "model_arguments", "published_checkpoint", "register_model"]
