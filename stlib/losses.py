"""Losses over per-time-step logits ``[T, B, classes]``.

TET, Temporal Efficient Training (Deng, Li, Zhang, Gu, ICLR 2022, arXiv 2202.11946): instead of
the cross-entropy of the time-averaged logits, every time step's logits are pushed towards the
label, and an MSE term keeps the logits near a constant ``phi`` (the paper's regulariser
against outliers)::

    L_TET   = 1/T * sum_t CE(O(t), y)
    L_MSE   = 1/T * sum_t MSE(O(t), phi)      (mean over steps, samples and classes)
    L_total = (1 - lambda) * L_TET + lambda * L_MSE

with ``phi = 1`` and ``lambda = 1e-3`` by default (the official TET code's ``means`` and
``lamb``). At inference the prediction is still the mean of ``O(t)`` over t. The SDT/STAtten
DVS recipes ("TET" configs) train with it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TETLoss", "tet_loss"]


def tet_loss(logits: torch.Tensor, target: torch.Tensor, *, lam: float = 1e-3, phi: float = 1.0,
             smoothing: float = 0.0) -> torch.Tensor:
    """TET loss of ``logits [T, B, classes]`` -> scalar.

    ``target``: ``[B]`` class indices or ``[B, classes]`` probabilities (mixup); ``lam`` and
    ``phi`` as in the module docstring; ``smoothing``: label smoothing of every step's CE.
    """
    if logits.dim() != 3:
        raise ValueError(f"TET needs per-time-step logits [T, B, classes], got shape "
                         f"{tuple(logits.shape)} (build the model with per_step_logits=True)")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"TET lambda weights two terms and must be in [0, 1], got {lam}")
    T, B, C = logits.shape
    # each step's logits [T*B, C] against the same targets repeated T times: one CE call
    # averages over steps and samples, which is 1/T sum_t CE_t with CE_t a mean over B
    repeated = target.repeat(T) if target.dim() == 1 else target.repeat(T, 1)
    ce = F.cross_entropy(logits.reshape(T * B, C), repeated, label_smoothing=smoothing)
    if lam == 0:
        return ce
    mse = F.mse_loss(logits, torch.full_like(logits, phi))
    return (1.0 - lam) * ce + lam * mse


class TETLoss(nn.Module):
    """Module form of :func:`tet_loss`: ``TETLoss(lam, phi)(logits [T, B, C], target)``."""

    def __init__(self, lam: float = 1e-3, phi: float = 1.0, smoothing: float = 0.0):
        super().__init__()
        self.lam, self.phi, self.smoothing = lam, phi, smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tet_loss(logits, target, lam=self.lam, phi=self.phi, smoothing=self.smoothing)

    def extra_repr(self) -> str:
        return f"lam={self.lam}, phi={self.phi}, smoothing={self.smoothing}"
