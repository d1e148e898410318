"""Weight initialisations shared by the models."""
from __future__ import annotations

from torch import nn


def trunc_normal_linear_init(module: nn.Module) -> None:
    """timm's ViT / Swin init, for ``model.apply``: truncated normal (std 0.02) Linear
    weights, zero biases; other modules keep torch's defaults."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
