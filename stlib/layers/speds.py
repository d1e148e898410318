"""Spiking Patch Embedding with Deformed Shortcut, SPEDS (QKFormer, Zhou et al. NeurIPS 2024,
Sec. 3.3, Eq. 11): a conv path plus a 1x1-conv shortcut, both ending in spikes and added.

``x [T, B, C_in, H, W] -> [T, B, D, H', W']`` with values in {0, 1, 2} (spike + spike).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .multistep import ConvBN, seq_to_batch

NeuronFactory = Callable[..., nn.Module]


class ConvBNPoolSN(nn.Module):
    """``SN(MaxPool(BN(Conv3x3(x))))``: QKFormer pools the BN output, *before* the neuron
    (Spikformer's SPS pools the spikes, after it). ``pool=False`` leaves the size as is."""

    def __init__(self, in_chans: int, out_chans: int, *, pool: bool, neuron: NeuronFactory):
        super().__init__()
        self.conv = ConvBN(in_chans, out_chans)
        self.pool = nn.MaxPool2d(3, 2, 1) if pool else nn.Identity()
        self.neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(seq_to_batch(self.pool, self.conv(x)))


class SPEDS(nn.Module):
    """One SPEDS embedding, ``out = SN(main(s)) + SN(BN(Conv1x1_stride(s)))``.

    * ``stem_pool=None``: no stem, ``s = x`` (QKFormer's ``PatchEmbeddingStage``, between
      stages); otherwise ``s = ConvBNPoolSN(x)`` to ``D/2`` channels, pooled when ``stem_pool``
      (the first embedding, ``PatchEmbedInit``).
    * ``main``: one ``ConvBNPoolSN`` per entry of ``body_pools`` (the first to D, the rest
      D -> D), pooled where the entry is True.
    * the shortcut's stride is ``2 ** sum(body_pools)``; with ``MaxPool(3, 2, 1)`` both paths
      give ``ceil(H / stride)``, so any image size lines up (8x8 digits included).

    CIFAR: first ``(stem_pool=False, (False,))``, then ``(None, (False, True))``.
    ImageNet: first ``(True, (True, False))`` (x4), then ``(None, (True, False))``.
    """

    def __init__(self, in_chans: int, embed_dim: int, *, stem_pool: bool | None,
                 body_pools: Sequence[bool], neuron: NeuronFactory):
        super().__init__()
        if not body_pools:
            raise ValueError("SPEDS needs at least one conv in its main path (body_pools)")
        if stem_pool is None:
            self.stem, mid = nn.Identity(), in_chans
        else:
            mid = embed_dim // 2
            self.stem = ConvBNPoolSN(in_chans, mid, pool=stem_pool, neuron=neuron)
        ins = [mid] + [embed_dim] * (len(body_pools) - 1)
        self.main = nn.Sequential(*(ConvBNPoolSN(i, embed_dim, pool=p, neuron=neuron)
                                    for i, p in zip(ins, body_pools)))
        stride = 2 ** sum(bool(p) for p in body_pools)
        self.shortcut = ConvBN(mid, embed_dim, kernel_size=1, stride=stride, padding=0)
        self.shortcut_neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        return self.main(s) + self.shortcut_neuron(self.shortcut(s))
