"""Surrogate spike functions: Heaviside forward, surrogate backward, primitives, look-up."""
from __future__ import annotations

import math

import pytest
import torch

from stlib.neurons.surrogate import (ATan, Rectangle, Sigmoid, SURROGATES, Surrogate, Triangle,
                                     atan_grad, create_surrogate, heaviside, rectangle_grad,
                                     sigmoid_grad, triangle_grad)
from stlib.registry import UnknownNameError

NAMES = SURROGATES.names()
DEFAULTS = {"sigmoid": (Sigmoid, 4.0), "atan": (ATan, 2.0), "rectangle": (Rectangle, 1.0),
            "triangle": (Triangle, 1.0)}


def test_registry_holds_the_four_surrogates():
    assert NAMES == sorted(DEFAULTS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_forward_is_heaviside_and_the_tie_fires(name, dtype):
    u = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, 2.0], dtype=dtype)
    s = create_surrogate(name)(u)
    assert s.dtype == dtype
    assert s.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert heaviside(u).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


# (name, alpha, u, d(u)) worked out by hand from the formulas in NEURONS.md 1.0
LITERAL = [
    ("sigmoid", 4.0, 0.0, 1.0),                       # peak alpha/4
    ("sigmoid", 4.0, 0.25, 4 * 0.7310585786300049 * 0.2689414213699951),  # sig(1)(1-sig(1))
    ("sigmoid", 4.0, -0.25, 4 * 0.7310585786300049 * 0.2689414213699951),
    ("sigmoid", 1.0, 0.0, 0.25),
    ("atan", 2.0, 0.0, 1.0),                          # peak alpha/2
    ("atan", 2.0, 1 / math.pi, 0.5),                  # (pi/2 * 2 * u) = 1 -> 1 / (1 + 1)
    ("atan", 2.0, -1 / math.pi, 0.5),
    ("atan", 4.0, 0.0, 2.0),
    ("rectangle", 1.0, 0.0, 1.0),
    ("rectangle", 1.0, 0.49, 1.0),
    ("rectangle", 1.0, -0.49, 1.0),
    ("rectangle", 1.0, 0.5, 0.0),                     # edge excluded: |u| < 0.5/alpha
    ("rectangle", 1.0, -0.5, 0.0),
    ("rectangle", 1.0, 0.75, 0.0),
    ("rectangle", 2.0, 0.24, 2.0),                    # half-width 0.25, height 2
    ("rectangle", 2.0, 0.25, 0.0),
    ("triangle", 1.0, 0.0, 1.0),                      # peak alpha
    ("triangle", 1.0, 0.5, 0.5),
    ("triangle", 1.0, -0.25, 0.75),
    ("triangle", 1.0, 1.0, 0.0),                      # edge: half-width 1/alpha
    ("triangle", 1.0, -1.5, 0.0),
    ("triangle", 2.0, 0.0, 2.0),
    ("triangle", 2.0, 0.25, 1.0),
    ("triangle", 2.0, 0.5, 0.0),
]


@pytest.mark.parametrize("name,alpha,u,expected", LITERAL)
def test_spike_gradient_matches_the_formula(name, alpha, u, expected):
    x = torch.tensor([u], dtype=torch.float64, requires_grad=True)
    spike = create_surrogate(name, alpha)
    spike(x).sum().backward()
    assert x.grad.item() == pytest.approx(expected, abs=1e-12)
    assert spike.grad(x.detach()).item() == pytest.approx(expected, abs=1e-12)


def _grid(alpha: float) -> torch.Tensor:
    """Points around 0 with 0 and the rectangle/triangle edges included."""
    edges = [0.0, 0.5 / alpha, -0.5 / alpha, 1.0 / alpha, -1.0 / alpha]
    return torch.cat([torch.linspace(-3, 3, 61, dtype=torch.float64), torch.tensor(edges, dtype=torch.float64)])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("alpha", [None, 2.5])
def test_autograd_equals_the_plain_derivative(name, alpha):
    spike = create_surrogate(name, alpha)
    u = _grid(spike.alpha).requires_grad_()
    grad_out = torch.linspace(0.5, 1.5, u.numel(), dtype=torch.float64)  # backward multiplies
    spike(u).backward(grad_out)
    assert torch.allclose(u.grad, grad_out * spike.grad(u.detach()), atol=1e-12, rtol=0)
    assert u.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("alpha", [None, 0.7, 3.0])
def test_surrogate_is_the_derivative_of_its_primitive(name, alpha):
    """Central finite differences of the smooth primitive (spiking=False) in float64."""
    smooth = create_surrogate(name, alpha)
    smooth.spiking = False
    a = smooth.alpha
    u = torch.linspace(-3, 3, 241, dtype=torch.float64)
    kinks = torch.tensor([0.5 / a, 1.0 / a], dtype=torch.float64)
    u = u[((u.abs()[:, None] - kinks).abs() > 1e-3).all(dim=1)]  # skip the rectangle/triangle kinks
    h = 1e-7  # triangle: the slope has a corner at 0, so the central-difference error is alpha^2 h / 2
    fd = (smooth(u + h) - smooth(u - h)) / (2 * h)
    assert torch.allclose(fd, smooth.grad(u), atol=1e-6, rtol=0)
    # and autograd through the smooth forward gives the same slope
    v = u.clone().requires_grad_()
    smooth(v).sum().backward()
    assert torch.allclose(v.grad, smooth.grad(u), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_primitive_is_a_smooth_step(name):
    smooth = create_surrogate(name)
    smooth.spiking = False
    u = torch.linspace(-50, 50, 1001, dtype=torch.float64)
    p = smooth(u)
    assert torch.all(p[1:] >= p[:-1])                       # monotone
    assert p[500].item() == pytest.approx(0.5, abs=1e-12)   # u = 0
    assert p[0].item() == pytest.approx(0.0, abs=0.02) and p[-1].item() == pytest.approx(1.0, abs=0.02)
    assert not set(p.tolist()) <= {0.0, 1.0}                 # really smooth, not the spike


@pytest.mark.parametrize("name", NAMES)
def test_create_surrogate_defaults_and_alpha(name):
    cls, default = DEFAULTS[name]
    s = create_surrogate(name)
    assert type(s) is cls and s.alpha == default and s.spiking is True
    assert create_surrogate(name.upper(), alpha=3).alpha == 3.0
    assert f"alpha={default}" in repr(s)


def test_create_surrogate_passes_a_module_through_and_sets_alpha():
    s = Triangle(alpha=0.5)
    assert create_surrogate(s) is s and s.alpha == 0.5
    assert create_surrogate(s, alpha=3.0) is s and s.alpha == 3.0
    assert type(create_surrogate(ATan, 1.5)) is ATan and create_surrogate(ATan, 1.5).alpha == 1.5


def test_unknown_surrogate_lists_the_valid_names():
    with pytest.raises(UnknownNameError) as err:
        create_surrogate("sigmiod")
    msg = str(err.value)
    assert "'sigmiod'" in msg and "did you mean 'sigmoid'" in msg
    assert all(n in msg for n in NAMES)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha"):
        Sigmoid(alpha)
    s = Sigmoid()
    with pytest.raises(ValueError, match="alpha"):
        s.alpha = alpha


def test_plain_derivatives_have_their_peaks():
    z = torch.zeros(1)
    assert sigmoid_grad(z, 8.0).item() == 2.0
    assert atan_grad(z, 3.0).item() == 1.5
    assert rectangle_grad(z, 3.0).item() == 3.0
    assert triangle_grad(z, 3.0).item() == 3.0
    assert issubclass(Triangle, Surrogate)
