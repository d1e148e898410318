"""Transformer encoder blocks on tokens ``[T, B, N, D]``."""
from __future__ import annotations

import torch
from torch import nn


class SpikingBlock(nn.Module):
    """``x = x + Attn(x); x = x + MLP(x)`` (Spikformer Eq. 7-8).

    The residual adds spikes to spikes ("SEW" residual), so block outputs are integers.
    The attention and MLP are built by the model and passed in (timm's ``attn_layer`` /
    ``mlp_layer`` habit), so one block serves every attention variant.
    """

    def __init__(self, attn: nn.Module, mlp: nn.Module):
        super().__init__()
        self.attn = attn
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)
