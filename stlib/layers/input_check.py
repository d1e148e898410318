"""Input checks shared by models: ``[B, C, H, W]`` or ``[T, B, C, H, W]`` -> ``[T, B, C, H, W]``."""
from __future__ import annotations

import torch


def to_time_major(x: torch.Tensor, *, T: int, in_chans: int, img_size: int,
                  model: str) -> torch.Tensor:
    """Direct encoding for images, checks for sequences.

    ``x [B, C, H, W]`` is repeated T times (direct encoding); ``x [T, B, C, H, W]`` (an
    encoder's output or event frames) must have the model's T. Both must have the model's
    ``(C, H, W)``; every mismatch is a ``ValueError`` naming the model and the shapes.
    """
    if x.dim() == 4:
        x = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
    elif x.dim() != 5:
        raise ValueError(f"{model} expects [B, C, H, W] or [T, B, C, H, W], got shape {tuple(x.shape)}")
    elif x.shape[0] != T:
        raise ValueError(f"input has {x.shape[0]} time steps, {model} was built for T={T} "
                         f"(event frames [B, T, ...] must be transposed to [T, B, ...])")
    if tuple(x.shape[2:]) != (in_chans, img_size, img_size):
        raise ValueError(f"input {tuple(x.shape[2:])} does not match {model}'s (C, H, W) = "
                         f"({in_chans}, {img_size}, {img_size})")
    return x
