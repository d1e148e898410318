"""Transformer encoder blocks on tokens ``[T, B, N, D]``."""
from __future__ import annotations

import torch
from torch import nn


class SpikingBlock(nn.Module):
    """``x = x + Attn(x); x = x + MLP(x)`` (Spikformer Eq. 7-8); with a ``conv`` token mixer
    (E-SpikeFormer), ``x = x + Conv(x)`` comes first. ``layer_scale`` (QSD) multiplies the
    attention and MLP branches by learned per-channel scales ``layer_scale1`` /
    ``layer_scale2``, initialised to that value (the official 1e-6).

    The residual adds spikes to spikes ("SEW" residual), so block outputs are integers.
    The attention and MLP are built by the model and passed in (timm's ``attn_layer`` /
    ``mlp_layer`` habit), so one block serves every attention variant.
    """

    def __init__(self, attn: nn.Module, mlp: nn.Module, conv: nn.Module | None = None,
                 layer_scale: float | None = None, dim: int | None = None):
        super().__init__()
        if conv is not None:  # registered first: the official state-dict order
            self.conv = conv
        self.attn = attn
        if layer_scale is not None:
            if dim is None:
                raise ValueError("layer_scale needs the block width dim")
            self.layer_scale1 = nn.Parameter(torch.full((dim,), float(layer_scale)))
            self.layer_scale2 = nn.Parameter(torch.full((dim,), float(layer_scale)))
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [T, B, N, D]
        if hasattr(self, "conv"):
            x = x + self.conv(x)
        if hasattr(self, "layer_scale1"):
            x = x + self.attn(x) * self.layer_scale1
            return x + self.mlp(x) * self.layer_scale2
        x = x + self.attn(x)
        return x + self.mlp(x)
