"""Model registry (timm's ``register_model`` / ``create_model`` convention)."""
from __future__ import annotations

import typing
from typing import Any, Callable

from torch import nn

from ..registry import Registry, UnknownNameError, init_keywords
from .official_weights import PUBLISHED_CHECKPOINTS, PublishedCheckpoint, load_official

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a model factory under its function name."""
    return MODELS.register(fn.__name__)(fn)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching a shell-style wildcard (``"spikformer*"``)."""
    return MODELS.names(pattern)


def model_class(name: str) -> type[nn.Module]:
    """The class a registered factory builds (from its return annotation)."""
    fn = MODELS.get(name)
    return typing.get_type_hints(fn)["return"]


def model_arguments(name: str) -> list[str]:
    """The keyword arguments the model of ``name`` accepts (a subclass's ``**kwargs`` that
    go on to its parent's ``__init__`` count the parent's too)."""
    return sorted(init_keywords(model_class(name)))


def create_model(name: str, *, neuron: Any = None, pretrained: Any = None,
                 **overrides: Any) -> nn.Module:
    """Build a registered model.

    ``pretrained`` is a checkpoint (a path, or a loaded state dict) in the official
    repository's layout or stlib's own; it is loaded strictly by
    :func:`stlib.models.official_weights.load_official`.

    ``neuron`` is a neuron type name (``"PLIF"``), a factory from
    :func:`stlib.neurons.neuron_factory`, or None for the model's default (the papers' LIF).
    ``overrides`` go to the model's constructor; ``None`` values are dropped (keep the
    model's default). A misspelt override is an error naming the valid arguments.
    """
    from ..neurons import neuron_factory  # late: neurons import nothing from models

    fn = MODELS.get(name)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(neuron, str):
        neuron = neuron_factory(neuron, T=overrides.get("T"))
    if neuron is not None:
        overrides["neuron"] = neuron
    valid = model_arguments(MODELS.canonical(name))
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise UnknownNameError(f"argument of model {name!r}", unknown[0], valid)
    model = fn(**overrides)
    if pretrained is not None:
        load_official(model, pretrained)
    return model


def published_checkpoint(name: str) -> PublishedCheckpoint | None:
    """The released checkpoint recorded for registered model ``name`` (None if there is
    none): its URL, the dataset and the top-1 its authors report."""
    return PUBLISHED_CHECKPOINTS.get(MODELS.canonical(name))
