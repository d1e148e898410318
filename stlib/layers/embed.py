"""Patch embeddings: image ``[T, B, C, H, W]`` -> tokens ``[T, B, N, D]``."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .multistep import ConvBN, seq_to_batch

NeuronFactory = Callable[..., nn.Module]


class SPS(nn.Module):
    """Spiking Patch Splitting (Spikformer, Zhou et al. ICLR 2023, Sec. 3.1).

    Four ``Conv3x3-BN-SN`` stages with widths D/8, D/4, D/2, D; stage ``i`` is followed by
    ``MaxPool(3, 2, 1)`` where ``pool_stages[i]`` is set (CIFAR: the last two, so 32 -> 8 and
    N = 64). Then the relative position embedding ``RPE = SN(BN(Conv3x3(x)))`` is added:
    ``x = x_feat + RPE(x_feat)`` (values in {0, 1, 2}).

    ``x [T, B, C_in, H, W] -> tokens [T, B, N, D]`` with ``N = (H / 2^pools) * (W / 2^pools)``.
    """

    def __init__(self, *, img_size: int, in_chans: int, embed_dim: int,
                 pool_stages: Sequence[bool], neuron: NeuronFactory):
        super().__init__()
        if len(pool_stages) != 4:
            raise ValueError(f"pool_stages needs 4 booleans (one per SPS stage), got {pool_stages!r}")
        stride = 2 ** sum(bool(p) for p in pool_stages)
        if img_size % stride:
            raise ValueError(f"image size {img_size} is not divisible by the SPS downsampling "
                             f"{stride} (pool_stages={list(pool_stages)})")
        widths = [embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        ins = [in_chans, *widths[:-1]]
        self.stages = nn.ModuleList(ConvBN(i, o) for i, o in zip(ins, widths))
        self.neurons = nn.ModuleList(neuron() for _ in widths)
        self.pools = nn.ModuleList(
            nn.MaxPool2d(3, 2, 1) if pool else nn.Identity() for pool in pool_stages)
        self.rpe = ConvBN(embed_dim, embed_dim)
        self.rpe_neuron = neuron()
        self.grid = img_size // stride
        self.num_patches = self.grid ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv_bn, sn, pool in zip(self.stages, self.neurons, self.pools):
            x = seq_to_batch(pool, sn(conv_bn(x)))
        x = x + self.rpe_neuron(self.rpe(x))  # [T, B, D, H', W']
        return x.flatten(3).transpose(2, 3).contiguous()  # [T, B, N, D]
