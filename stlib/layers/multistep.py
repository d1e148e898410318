"""Stateless layers in multi-step mode: run once over ``T*B`` and fold time back.

Conv, Linear and BatchNorm have no state across time, so a ``[T, B, ...]`` tensor is
flattened to ``[T*B, ...]``, processed in one large call (big GEMMs; BatchNorm statistics
shared over T and B as in every spiking transformer's official code) and reshaped back.
"""
from __future__ import annotations

import torch
from timm.layers import drop_path
from torch import nn


def seq_to_batch(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``module`` to ``x [T, B, ...]`` as one batch ``[T*B, ...]``; returns ``[T, B, ...]``."""
    T, B = x.shape[:2]
    y = module(x.flatten(0, 1))
    return y.reshape(T, B, *y.shape[1:])


class SeqToBatch(nn.Module):
    """Module form of :func:`seq_to_batch`: wraps a stateless layer for ``[T, B, ...]`` input."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return seq_to_batch(self.body, x)


class ConvBN(nn.Module):
    """``x [T, B, C_in, H, W] -> BN(Conv2d(x)) [T, B, C_out, H', W']`` (no bias: BN follows)."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, bias: bool = False, groups: int = 1):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, bias=bias,
                              groups=groups)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        y = self.bn(self.conv(x.flatten(0, 1)))
        return y.reshape(T, B, *y.shape[1:])


class LinearBN(nn.Module):
    """``x [T, B, N, C_in] -> BN1d(Linear(x)) [T, B, N, C_out]``, BN over channels.

    The token layout of Spikformer's CIFAR code: ``nn.Linear`` (with bias) then ``BatchNorm1d``
    on ``[T*B, C, N]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x.flatten(0, 2))  # [T*B*N, C_out]
        # BN1d on [T*B*N, C] has the statistics of BN1d on [T*B, C, N] (per channel, over every
        # token of every step and sample) without the two transposes
        return self.bn(y).reshape(*x.shape[:-1], -1)


class SampleDropPath(nn.Module):
    """Stochastic depth on ``x [T, B, ...]``: a residual branch is dropped (and the kept ones
    scaled by ``1 / (1 - p)``) per sample, the same way at every step (timm's ``drop_path``
    on the batch dimension, not on T)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x.transpose(0, 1), self.p, self.training).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"p={self.p}"
