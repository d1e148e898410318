"""Neurons by name: the :data:`NEURONS` table, checked construction and picklable factories.

Canonical names: ``LIF, IF, IFSoft, PLIF, CLIF, GLIF, KLIF`` (``IF`` is :class:`IFHard`),
``MultiSpike`` (the integer activation of E-SpikeFormer and QSD) and ``QCFS`` (the ANN
activation of ANN-to-SNN conversion, MST);
lower-case and snake-case aliases are registered too, and every look-up is case-insensitive.

* :func:`create_neuron` builds one neuron; ``None``-valued settings keep the class default,
  an unknown setting is a ``ValueError`` naming it, the neuron and the accepted keys.
* :func:`neuron_factory` returns a :class:`NeuronFactory`: a model calls it once per neuron
  site, and the site's own overrides (e.g. the attention neuron's ``v_threshold=0.5``)
  win over the configured settings.
"""
from __future__ import annotations

import copy
import inspect
from typing import Any

from torch import nn

from stlib.neurons.reference import (CLIF, GLIF, KLIF, LIF, PLIF, QCFS, BaseNeuron, IFHard, IFSoft,
                                    MultiSpike)
from stlib.registry import Registry

__all__ = ["NEURONS", "create_neuron", "neuron_factory", "NeuronFactory", "is_neuron",
           "neurons_of", "neuron_settings"]

NEURONS: Registry[type[BaseNeuron]] = Registry("neuron")
NEURONS.add("LIF", LIF, aliases=("lif",))
NEURONS.add("IF", IFHard, aliases=("if", "IFHard", "if_hard", "IF_hard"))
NEURONS.add("IFSoft", IFSoft, aliases=("ifsoft", "if_soft", "IF_soft"))
NEURONS.add("PLIF", PLIF, aliases=("plif",))
NEURONS.add("CLIF", CLIF, aliases=("clif",))
NEURONS.add("GLIF", GLIF, aliases=("glif",))
NEURONS.add("KLIF", KLIF, aliases=("klif",))
NEURONS.add("MultiSpike", MultiSpike, aliases=("multispike", "multi_spike"))
NEURONS.add("QCFS", QCFS, aliases=("qcfs",))


def neuron_settings(name: str) -> list[str]:
    """Sorted keyword settings the neuron ``name`` accepts (``T`` excluded: it is passed apart)."""
    cls = NEURONS.get(name)
    params = inspect.signature(cls).parameters.values()
    return sorted(p.name for p in params
                  if p.name != "T" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _drop_none(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if v is not None}


def _soft_reset(settings: dict[str, Any]) -> dict[str, Any]:
    v_reset = settings.get("v_reset")
    if isinstance(v_reset, str) and v_reset.lower() == "soft":
        return {**settings, "v_reset": None}
    return settings


def create_neuron(name: str, *, T: int | None = None, backend: str | None = None,
                  **settings: Any) -> BaseNeuron:
    """Build the neuron registered as ``name`` (case-insensitive; aliases allowed).

    ``T`` goes only to classes with ``requires_T`` (GLIF), for which it is required.
    Settings whose value is ``None`` are dropped (``None`` keeps the class default), so a
    config asks for a soft reset with ``v_reset="soft"`` (any case), passed on as ``None``.
    A setting the class does not take raises ``ValueError`` naming it and the valid keys;
    an unknown name raises :class:`~stlib.registry.UnknownNameError`. ``backend`` (``"auto"``
    when None, ``"reference"`` or ``"triton"``) picks the implementation (:mod:`stlib.neurons.kernels`).
    """
    canonical = NEURONS.canonical(name)
    cls = NEURONS.get(canonical)
    settings = _drop_none(settings)
    valid = neuron_settings(canonical)
    bad = [k for k in settings if k not in valid]
    if bad:
        what = "setting" if len(bad) == 1 else "settings"
        raise ValueError(f"neuron {canonical!r} has no {what} {', '.join(map(repr, bad))}; "
                         f"valid: {', '.join(valid)}")
    if cls.requires_T:
        if T is None:
            raise ValueError(f"{canonical} needs T (the number of time steps): pass T=...")
        neuron = cls(T, **_soft_reset(settings))
    else:
        neuron = cls(**_soft_reset(settings))
    neuron.backend = backend
    return neuron


class NeuronFactory:
    """A picklable ``(**site_overrides) -> BaseNeuron`` with fixed name, T and settings.

    ``factory(**overrides)`` builds ``create_neuron(name, T=T, **{**settings, **overrides})``:
    the site's overrides win. ``None``-valued overrides are ignored (no opinion), so the
    configured setting, or else the class default, applies. ``T`` may be overridden too.
    Module-valued settings (a surrogate instance) are deep-copied per neuron so that
    neurons never share (and mutate) one surrogate module.
    """

    def __init__(self, name: str, *, T: int | None = None, backend: str | None = None, **settings: Any):
        self.name = NEURONS.canonical(name)
        self.T = T
        self.backend = backend
        self.settings = _drop_none(settings)
        self()  # validate name, settings and T now, not at the first model build

    def __call__(self, *, T: int | None = None, **overrides: Any) -> BaseNeuron:
        merged = {**self.settings, **_drop_none(overrides)}
        merged = {k: copy.deepcopy(v) if isinstance(v, nn.Module) else v for k, v in merged.items()}
        return create_neuron(self.name, T=self.T if T is None else T, backend=self.backend, **merged)

    def __repr__(self) -> str:
        args = [repr(self.name)]
        if self.T is not None:
            args.append(f"T={self.T!r}")
        args += [f"{k}={v!r}" for k, v in self.settings.items()]
        if self.backend is not None:
            args.append(f"backend={self.backend!r}")
        return f"NeuronFactory({', '.join(args)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NeuronFactory):
            return NotImplemented
        return ((self.name, self.T, self.backend, self.settings)
                == (other.name, other.T, other.backend, other.settings))

    __hash__ = None  # settings is a dict


def neuron_factory(name: str, *, T: int | None = None, backend: str | None = None,
                   **settings: Any) -> NeuronFactory:
    """A validated, picklable factory for neuron ``name`` with these settings (see :class:`NeuronFactory`)."""
    return NeuronFactory(name, T=T, backend=backend, **settings)


def is_neuron(module: object) -> bool:
    """Whether ``module`` is a stlib spiking neuron."""
    return isinstance(module, BaseNeuron)


def neurons_of(model: nn.Module) -> list[tuple[str, BaseNeuron]]:
    """``(qualified_name, neuron)`` for every neuron in ``model`` (``named_modules`` order)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, BaseNeuron)]
