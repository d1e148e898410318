"""Surrogate spike functions: Heaviside forward, smooth slope backward.

The forward pass of every surrogate is the Heaviside step ``1[u >= 0]`` (the tie ``u == 0``
fires, as in spikingjelly). The backward pass multiplies the incoming gradient by a
surrogate derivative ``d(u, alpha)``. Each surrogate comes as three pieces:

* a plain derivative function (``sigmoid_grad(u, alpha)``, ...) that kernels and tests call;
* its primitive (``sigmoid_primitive(u, alpha)``, ...): a smooth step whose exact derivative
  is the surrogate, used when the module runs with ``spiking=False`` (finite-difference and
  ``gradcheck`` tests, smooth-mode analysis);
* a ``torch.autograd.Function`` (``SigmoidSpike``, ...) that saves ``u`` and uses the
  derivative in backward, wrapped in a small ``nn.Module`` (``Sigmoid``, ...) holding ``alpha``.

Formulas (NEURONS.md 1.0; ``alpha`` defaults in brackets):

========== ======================================== ==============================================
name       derivative d(u)                          primitive
========== ======================================== ==============================================
sigmoid    alpha*sig(alpha u)*(1 - sig(alpha u)) [4] sig(alpha u)
atan       (alpha/2) / (1 + (pi/2 alpha u)^2)    [2] atan(pi/2 alpha u)/pi + 1/2
rectangle  alpha * 1[|u| < 0.5/alpha]            [1] clamp(alpha u + 1/2, 0, 1)  (spikingjelly Rect)
triangle   max(0, alpha - alpha^2 |u|)           [1] (1+x)^2/2 for x<0, 1-(1-x)^2/2 for x>=0,
                                                     x = clamp(alpha u, -1, 1)
========== ======================================== ==============================================

Look-ups by name go through :data:`SURROGATES` / :func:`create_surrogate`.
"""
from __future__ import annotations

import math
from typing import Callable, ClassVar

import torch
from torch import Tensor, nn

from stlib.registry import Registry

__all__ = [
    "SURROGATES", "Surrogate", "Sigmoid", "ATan", "Rectangle", "Triangle", "create_surrogate",
    "heaviside", "sigmoid_grad", "atan_grad", "rectangle_grad", "triangle_grad",
    "sigmoid_primitive", "atan_primitive", "rectangle_primitive", "triangle_primitive",
    "SigmoidSpike", "ATanSpike", "RectangleSpike", "TriangleSpike",
]

SURROGATES: Registry[type["Surrogate"]] = Registry("surrogate")


def heaviside(u: Tensor) -> Tensor:
    """``1[u >= 0]`` in ``u``'s dtype: the tie ``u == 0`` fires."""
    # the comparison writes floats directly: a bool result plus a cast is 4x slower on CPU
    return torch.ge(u, 0.0, out=torch.empty_like(u, memory_format=torch.contiguous_format))


# ---------------------------------------------------------------- derivatives (the surrogates)
def sigmoid_grad(u: Tensor, alpha: float) -> Tensor:
    """``alpha * sig(alpha u) * (1 - sig(alpha u))``; peak ``alpha / 4`` at ``u = 0``."""
    s = torch.sigmoid(alpha * u)
    return alpha * s * (1.0 - s)


def atan_grad(u: Tensor, alpha: float) -> Tensor:
    """``(alpha / 2) / (1 + (pi/2 * alpha * u)^2)``; peak ``alpha / 2`` at ``u = 0``."""
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * u) ** 2)


def rectangle_grad(u: Tensor, alpha: float) -> Tensor:
    """``alpha * 1[|u| < 0.5 / alpha]`` (spikingjelly ``Rect``): a box of unit area."""
    return alpha * (u.abs() < 0.5 / alpha).to(u.dtype)


def triangle_grad(u: Tensor, alpha: float) -> Tensor:
    """``max(0, alpha - alpha^2 |u|)``: half-width ``1 / alpha``, peak ``alpha``, unit area."""
    return torch.clamp(alpha - alpha * alpha * u.abs(), min=0.0)


# ------------------------------------------------------ primitives (smooth steps, spiking=False)
def sigmoid_primitive(u: Tensor, alpha: float) -> Tensor:
    return torch.sigmoid(alpha * u)


def atan_primitive(u: Tensor, alpha: float) -> Tensor:
    return torch.atan(math.pi / 2.0 * alpha * u) / math.pi + 0.5


def rectangle_primitive(u: Tensor, alpha: float) -> Tensor:
    return torch.clamp(alpha * u + 0.5, 0.0, 1.0)


def triangle_primitive(u: Tensor, alpha: float) -> Tensor:
    x = torch.clamp(alpha * u, -1.0, 1.0)
    return torch.where(x < 0, 0.5 * (1.0 + x) ** 2, 1.0 - 0.5 * (1.0 - x) ** 2)


# ------------------------------------------------------------------ autograd functions
def _spike_function(name: str, derivative: Callable[[Tensor, float], Tensor]) -> type:
    """A ``torch.autograd.Function``: Heaviside forward, ``grad * derivative(u, alpha)`` backward."""

    def forward(ctx, u: Tensor, alpha: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.alpha = alpha
        return heaviside(u)

    def backward(ctx, grad_spike: Tensor):
        (u,) = ctx.saved_tensors
        grad_u = grad_spike * derivative(u, ctx.alpha) if ctx.needs_input_grad[0] else None
        return grad_u, None

    doc = f"Spike ``1[u >= 0]``; backward ``grad * {derivative.__name__}(u, alpha)``. Call ``.apply(u, alpha)``."
    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(forward), "backward": staticmethod(backward), "__doc__": doc,
                 "__module__": __name__})


SigmoidSpike = _spike_function("SigmoidSpike", sigmoid_grad)
ATanSpike = _spike_function("ATanSpike", atan_grad)
RectangleSpike = _spike_function("RectangleSpike", rectangle_grad)
TriangleSpike = _spike_function("TriangleSpike", triangle_grad)


# ---------------------------------------------------------------------------- modules
class Surrogate(nn.Module):
    """Base surrogate module: ``forward(u)`` is the spike (or the primitive when not spiking).

    ``alpha`` (a positive float) sets the slope/width; ``spiking=False`` makes ``forward``
    return the smooth primitive whose exact derivative is the surrogate. ``grad(u)`` evaluates
    the surrogate derivative at ``u``. ``u`` is any tensor; the output has its shape and dtype.
    """

    default_alpha: ClassVar[float]
    spike_function: ClassVar[type]
    derivative: ClassVar[Callable[[Tensor, float], Tensor]]
    primitive: ClassVar[Callable[[Tensor, float], Tensor]]

    def __init__(self, alpha: float | None = None, spiking: bool = True):
        super().__init__()
        self.alpha = self.default_alpha if alpha is None else alpha
        self.spiking = bool(spiking)

    @property
    def alpha(self) -> float:
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        value = float(value)
        if not (value > 0.0 and math.isfinite(value)):
            raise ValueError(f"{type(self).__name__}: alpha must be a positive finite float, got {value}")
        self._alpha = value

    def forward(self, u: Tensor) -> Tensor:
        if self.spiking:
            return self.spike_function.apply(u, self.alpha)
        return self.primitive(u, self.alpha)

    def grad(self, u: Tensor) -> Tensor:
        """The surrogate derivative ``d(u)`` at this module's ``alpha``."""
        return self.derivative(u, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, spiking={self.spiking}"


@SURROGATES.register("sigmoid")
class Sigmoid(Surrogate):
    """Sigmoid surrogate (spikingjelly ``surrogate.Sigmoid``): ``d = alpha sig(alpha u)(1 - sig(alpha u))``."""

    default_alpha = 4.0
    spike_function = SigmoidSpike
    derivative = staticmethod(sigmoid_grad)
    primitive = staticmethod(sigmoid_primitive)


@SURROGATES.register("atan", aliases=("arctan",))
class ATan(Surrogate):
    """Arctangent surrogate (spikingjelly ``surrogate.ATan``): ``d = (alpha/2) / (1 + (pi/2 alpha u)^2)``."""

    default_alpha = 2.0
    spike_function = ATanSpike
    derivative = staticmethod(atan_grad)
    primitive = staticmethod(atan_primitive)


@SURROGATES.register("rectangle", aliases=("rect",))
class Rectangle(Surrogate):
    """Rectangle surrogate, spikingjelly ``Rect`` form: ``d = alpha 1[|u| < 0.5/alpha]``.

    With ``alpha = 1`` this is the box of half-width 0.5 used by the CLIF and GLIF repositories.
    (The CLIF repo writes it as ``(1/a) 1[|u| <= a/2]``, i.e. ``a = 1/alpha``; the two agree
    at the default ``alpha = 1`` apart from the edge ``|u| == 0.5``, which is excluded here.)
    """

    default_alpha = 1.0
    spike_function = RectangleSpike
    derivative = staticmethod(rectangle_grad)
    primitive = staticmethod(rectangle_primitive)


@SURROGATES.register("triangle")
class Triangle(Surrogate):
    """Triangle surrogate: ``d = max(0, alpha - alpha^2 |u|)`` (half-width ``1/alpha``, peak ``alpha``).

    BrainCog's ``QGateGrad`` has this shape (with alpha 2 and a strict ``u > 0`` forward).
    """

    default_alpha = 1.0
    spike_function = TriangleSpike
    derivative = staticmethod(triangle_grad)
    primitive = staticmethod(triangle_primitive)


def create_surrogate(name_or_module: str | nn.Module | type, alpha: float | None = None) -> nn.Module:
    """Build a surrogate from a registry name (``"sigmoid"``, ``"atan"``, ...), or pass one through.

    ``alpha=None`` keeps that surrogate's default. A module is returned as is (the same
    object), with ``alpha`` set when given. A :class:`Surrogate` subclass is instantiated.
    An unknown name raises :class:`~stlib.registry.UnknownNameError` listing the valid names.
    """
    if isinstance(name_or_module, nn.Module):
        if alpha is not None:
            name_or_module.alpha = float(alpha)
        return name_or_module
    if isinstance(name_or_module, type) and issubclass(name_or_module, Surrogate):
        return name_or_module(alpha)
    return SURROGATES.get(name_or_module)(alpha)
