"""Token <-> feature-map reshapes and the downsampling rule for small images.

Spiking transformers keep tokens ``[T, B, N, D]`` and feature maps ``[T, B, D, H, W]``
(square grids, ``N = H * W``); hierarchical models switch between the two.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["tokens_to_grid", "grid_to_tokens", "max3x3", "grid_max3x3", "fit_strides", "fit_pools"]


def tokens_to_grid(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, N, D] -> [T, B, D, H, W]`` for a square grid ``H = W = sqrt(N)``."""
    T, B, N, D = x.shape
    side = math.isqrt(N)
    if side * side != N:
        raise ValueError(f"{N} tokens do not form a square grid")
    return x.transpose(2, 3).reshape(T, B, D, side, side)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, D, H, W] -> [T, B, N = H*W, D]``."""
    return x.flatten(3).transpose(2, 3).contiguous()


def max3x3(x: torch.Tensor) -> torch.Tensor:
    """The max over every 3x3 window of the last two axes (stride 1, padding that never wins),
    any leading shape: ``MaxPool3d((1, 3, 3), stride 1, padding (0, 1, 1))`` on a 5-D tensor,
    the DVS-mode "Erode" of SDT v1 and STAtten (on spikes it spreads each spike to its 8
    neighbours, a dilation despite the name)."""
    y = F.max_pool2d(x.flatten(0, -3), kernel_size=3, stride=1, padding=1)
    return y.reshape(x.shape)


def grid_max3x3(tokens: torch.Tensor) -> torch.Tensor:
    """:func:`max3x3` over the token grid, per channel: ``[T, B, N, D] -> [T, B, N, D]``."""
    return grid_to_tokens(max3x3(tokens_to_grid(tokens)))


def fit_strides(img_size: int, strides: Sequence[int], min_grid: int = 2) -> tuple[int, ...]:
    """Downsampling strides for an image too small for the configured ones.

    While ``img_size < min_grid * prod(strides)``, the first stride above 1 becomes 1, so the
    last (token) grid keeps at least ``min_grid`` pixels a side: ImageNet pooling on the
    quick preset's 8x8 digits keeps the last two poolings (8 -> 2), as CIFAR does. Sizes the
    configured strides fit are left alone (divisibility is the caller's check), so the
    official image sizes always get the official strides.
    """
    strides = list(strides)
    while img_size < min_grid * math.prod(strides) and any(s > 1 for s in strides):
        strides[next(i for i, s in enumerate(strides) if s > 1)] = 1
    return tuple(strides)


def fit_pools(img_size: int, pool_stages: Sequence[bool], min_grid: int = 2) -> tuple[bool, ...]:
    """:func:`fit_strides` for MaxPool(3, 2, 1) flags (``True`` = a stride-2 pool)."""
    fitted = fit_strides(img_size, [2 if p else 1 for p in pool_stages], min_grid)
    return tuple(s > 1 for s in fitted)
