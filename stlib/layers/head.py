"""Classification heads: tokens ``[T, B, N, D]`` -> logits."""
from __future__ import annotations

import torch
from torch import nn


class MeanTokenHead(nn.Module):
    """``Linear(mean_N(x))`` per step, then mean over T (Spikformer's head; linear, so the
    order of the means does not matter).

    ``x [T, B, N, D] -> logits [B, classes]``, or ``[T, B, classes]`` with ``per_step=True``
    (for TET-style losses on per-step outputs).
    """

    def __init__(self, dim: int, num_classes: int, per_step: bool = False):
        super().__init__()
        self.per_step = per_step
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(x.mean(2))  # [T, B, classes]
        return logits if self.per_step else logits.mean(0)
