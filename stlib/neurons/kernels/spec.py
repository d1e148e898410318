"""What a fused implementation needs to know about a neuron: :class:`Spec`, from :func:`describe`.

A fused kernel never calls the neuron's ``charge``/``fire``/``reset``; it re-implements the
dynamics of ``stlib/neurons/reference.py`` for the classes that declare a ``kernel_kind`` (one
of :data:`KINDS`) in their own body. So a subclass (which may override a step) or a surrogate
module other than the four built-ins in spiking mode is *unsupported*, and
:func:`unsupported_reason` says why in words. This module reads the declaration and never
imports the neuron classes: the reference imports the kernels, not the other way round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from torch import nn

from stlib.neurons.surrogate import ATan, Rectangle, Sigmoid, Triangle

__all__ = ["Spec", "describe", "kernel_kind", "unsupported_reason", "KINDS", "SURROGATE_IDS"]

#: the kernel families (a neuron class names its own in ``kernel_kind``)
KINDS = ("lif", "if", "plif", "klif", "clif", "glif")
# exact surrogate class -> the integer the kernels branch on (a compile-time constant)
SURROGATE_IDS = {Sigmoid: 0, ATan: 1, Rectangle: 2, Triangle: 3}
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Spec:
    """The scalar settings of one neuron call, as plain Python values.

    ``kind`` is one of ``lif, if, plif, klif, clif``; ``hard`` says hard reset (``v_reset``
    is then the reset value) versus soft; ``tau`` is the LIF/KLIF/CLIF time constant (None
    for IF and PLIF, whose leak is the tensor ``sigmoid(w)``); ``surrogate`` is an index into
    :data:`SURROGATE_IDS` with its ``alpha``.
    """

    kind: str
    hard: bool
    v_reset: float
    v_threshold: float
    tau: float | None
    decay_input: bool
    detach_reset: bool
    scale_reset: bool
    surrogate: int
    alpha: float

    @property
    def surrogate_consts(self) -> tuple[float, float, float]:
        """``(alpha, 0.5/alpha, pi/2*alpha)`` computed in double, as reference.py's Python math does."""
        return self.alpha, 0.5 / self.alpha, math.pi / 2.0 * self.alpha


def kernel_kind(neuron: nn.Module) -> str | None:
    """The kernel family the neuron's exact class declares (None: inherited or absent)."""
    kind = vars(type(neuron)).get("kernel_kind")
    return kind if kind in KINDS else None


def unsupported_reason(neuron: nn.Module) -> str | None:
    """``None`` if a fused implementation can run ``neuron``; otherwise why not, in words."""
    if kernel_kind(neuron) is None:
        return f"neuron type {type(neuron).__name__} has no fused kernel (fused: LIF, IF, IFSoft, PLIF, KLIF, CLIF, GLIF)"
    surrogate = neuron.surrogate
    if type(surrogate) not in SURROGATE_IDS:
        return (f"surrogate {type(surrogate).__name__} is not fused "
                f"(fused: {', '.join(c.__name__ for c in SURROGATE_IDS)})")
    if not surrogate.spiking:
        return "surrogate.spiking=False (smooth mode) runs only in the reference loop"
    return None


def describe(neuron: nn.Module) -> Spec:
    """The :class:`Spec` of a supported ``neuron`` (call :func:`unsupported_reason` first)."""
    kind = kernel_kind(neuron)
    hard = neuron.v_reset is not None
    if kind == "glif":  # its threshold and leak are learnable tensors, passed apart
        return Spec(kind=kind, hard=False, v_reset=0.0, v_threshold=0.0, tau=None, decay_input=False,
                    detach_reset=neuron.detach_reset, scale_reset=False,
                    surrogate=SURROGATE_IDS[type(neuron.surrogate)], alpha=float(neuron.surrogate.alpha))
    return Spec(kind=kind, hard=hard, v_reset=float(neuron.v_reset) if hard else 0.0,
                v_threshold=float(neuron.v_threshold),
                tau=float(neuron.tau) if kind in ("lif", "klif", "clif") else None,
                decay_input=bool(getattr(neuron, "decay_input", kind != "clif")),
                detach_reset=neuron.detach_reset, scale_reset=bool(getattr(neuron, "scale_reset", False)),
                surrogate=SURROGATE_IDS[type(neuron.surrogate)], alpha=float(neuron.surrogate.alpha))
