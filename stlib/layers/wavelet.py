"""Spiking Haar wavelet transforms with a ternary integrate-and-fire neuron.

From the Spiking Wavelet Transformer (Fang et al., ECCV 2024; official code
bic-L/Spiking-Wavelet-Transformer, re-implemented from shared/reference/MODELS-2.md, sec. 2).

* :class:`NegIF`: ternary IF neuron, spikes in {-1, 0, +1}.
* :func:`haar_matrix`: the orthonormal multi-level Haar basis ``H_n``.
* :class:`HaarDWT2d` / :class:`HaarIDWT2d`: separable 2-D transforms with NegIF between the
  row and column passes, so every product is a spike (or ternary spike) times a constant.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..neurons.reference import BaseNeuron


class NegIF(BaseNeuron):
    """Ternary integrate-and-fire neuron (the SWformer's ``MultiStepNegIFNode``).

    ``x_seq [T, ...] -> spikes [T, ...]`` in {-1, 0, +1}. Per step, from V_0 = 0:

    * ``H_t = V_{t-1} + X_t`` (no leak);
    * ``S_t = 1[H_t >= v_threshold] - 1[H_t <= -(neg_v_threshold + inhibit)]``, each side with
      the surrogate gradient (default Sigmoid(alpha=4));
    * hard reset on either spike: ``V_t = H_t (1 - |S_t|) + v_reset |S_t|``.

    The official model passes only ``v_threshold=1.0``, so the negative threshold keeps its
    default 0.5 (firing at ``H <= -0.501``). This neuron is part of the wavelet operator,
    not a configurable site: it stays ternary whatever neuron type the rest of the network
    uses (a binary neuron would drop the sign of the Haar detail coefficients).
    """

    def __init__(self, v_threshold: float = 1.0, neg_v_threshold: float = 0.5, v_reset: float = 0.0,
                 *, inhibit: float = 1e-3, surrogate: str | nn.Module | None = None,
                 alpha: float | None = None, detach_reset: bool = False, store_v_seq: bool = False):
        if v_reset is None:
            raise ValueError("NegIF has a hard reset only: pass a float v_reset")
        super().__init__(v_threshold=v_threshold, v_reset=v_reset, detach_reset=detach_reset,
                         surrogate=surrogate, alpha=alpha, store_v_seq=store_v_seq)
        self.neg_v_threshold, self.inhibit = float(neg_v_threshold), float(inhibit)

    def charge(self, x: Tensor, t: int) -> None:
        self.v = self.v + x

    def fire(self) -> Tensor:
        positive = self.surrogate(self.v - self.v_threshold)
        negative = self.surrogate(-(self.v + self.neg_v_threshold + self.inhibit))
        return positive - negative

    def reset(self, spike: Tensor) -> None:
        s = (spike.detach() if self.detach_reset else spike).abs()
        self.v = self.v * (1.0 - s) + self.v_reset * s

    def extra_repr(self) -> str:
        return f"neg_v_threshold={self.neg_v_threshold}, {self._reset_repr()}"


def haar_matrix(n: int) -> Tensor:
    """Orthonormal Haar basis ``H_n [n, n]`` (n a power of two).

    ``H_1 = [1]``; ``H_n = [kron(H_{n/2}, [1, 1]); kron(I_{n/2}, [1, -1])]``, rows L2-normalised,
    so ``H_n H_n^T = I``: the full multi-level transform, coarse rows first.
    """
    if n < 1 or n & (n - 1):
        raise ValueError(f"the Haar transform needs a power-of-two size, got {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        m = h.shape[0]
        h = torch.cat([torch.kron(h, torch.tensor([[1.0, 1.0]], dtype=torch.float64)),
                       torch.kron(torch.eye(m, dtype=torch.float64),
                                  torch.tensor([[1.0, -1.0]], dtype=torch.float64))])
    return (h / h.norm(dim=1, keepdim=True)).float()


class _Haar2d(nn.Module):
    """Holds the Haar matrix for the last spatial size seen (built on first use, like the
    official code, so the module does not need the feature-map size at construction)."""

    def __init__(self, num_neurons: int, v_threshold: float, surrogate: str | nn.Module | None,
                 alpha: float | None):
        super().__init__()
        # a surrogate module is copied per neuron (as NeuronFactory does): never shared
        self.neurons = nn.ModuleList(
            NegIF(v_threshold=v_threshold, surrogate=copy.deepcopy(surrogate), alpha=alpha)
            for _ in range(num_neurons))
        self._cache: dict[tuple, Tensor] = {}

    def matrix(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        if H != W:
            raise ValueError(f"the spiking Haar transform needs square maps, got {H}x{W}")
        key = (H, x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = haar_matrix(H).to(device=x.device, dtype=x.dtype)
        return self._cache[key]


class HaarDWT2d(_Haar2d):
    """Forward 2-D Haar transform: ``Z = H NegIF(X H^T)``. ``x [T, B, C, H, W] -> same``."""

    def __init__(self, v_threshold: float = 1.0, *, surrogate: str | nn.Module | None = None,
                 alpha: float | None = None):
        super().__init__(1, v_threshold, surrogate, alpha)

    def forward(self, x: Tensor) -> Tensor:
        h = self.matrix(x)
        return h @ self.neurons[0](x @ h.T)  # rows (W axis), ternary spikes, then columns


class HaarIDWT2d(_Haar2d):
    """Inverse 2-D Haar transform: ``X = H^T NegIF(NegIF(U) H)``. ``u [T, B, C, H, W] -> same``."""

    def __init__(self, v_threshold: float = 1.0, *, surrogate: str | nn.Module | None = None,
                 alpha: float | None = None):
        super().__init__(2, v_threshold, surrogate, alpha)

    def forward(self, u: Tensor) -> Tensor:
        h = self.matrix(u)
        return h.T @ self.neurons[1](self.neurons[0](u) @ h)


__all__ = ["NegIF", "haar_matrix", "HaarDWT2d", "HaarIDWT2d"]
