"""Spiking Wavelet Transformer, SWformer (Fang et al., ECCV 2024).

Paper: https://arxiv.org/abs/2403.11138 ; official code bic-L/Spiking-Wavelet-Transformer
(re-implemented from the facts in shared/reference/MODELS-2.md, section 2).

Top to bottom (CIFAR, SWformer-4-384)::

    image -> (repeat T) -> MS-SPS (Spike-driven Transformer tokenizer, real-valued output)
          -> L x [ x += FATM(x) ; x += MLP(x) ]  (membrane shortcut: real-valued stream)
          -> mean over tokens -> Linear -> mean over T -> logits

FATM, the Frequency-Aware Token Mixer (no attention), on ``s = SN(x)`` (maps ``[T,B,C,H,W]``):

* wavelet path: ``Z = H NegIF(s H^T)`` (spiking 2-D Haar), ``A = SN(BN(Z))``, a learnable
  per-group channel mixing ``A[g] W_g`` (``W [G, C/G, C/G]``, init ``0.02 randn``), BN,
  inverse ``H^T NegIF(NegIF(.) H)``, BN;
* two conv paths on s with weights shared by the G channel groups: Conv1x1-BN and Conv3x3-BN;
* ``FATM(x) = wavelet + conv1 + conv2``.

The ternary NegIF neurons of the Haar transforms (threshold +1 / -0.5, see
:class:`stlib.layers.wavelet.NegIF`) stay ternary whatever neuron type is configured; they
take the configured surrogate and alpha. Every other neuron comes from ``neuron``.
``num_heads`` is accepted for the common size keys and unused (there is no attention).
The spatial size of the token grid must be a power of two (Haar matrix).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..layers import MeanTokenHead
from ..layers.grid import grid_to_tokens, tokens_to_grid
from ..layers.multistep import seq_to_batch
from ..layers.spike_driven import MSSPS, PreActMLP
from ..layers.wavelet import HaarDWT2d, HaarIDWT2d
from ._registry import register_model
from .official_weights import OfficialLayout, PublishedCheckpoint
from .spikformer import BLOCK_RENAME, SPS_RENAME, TokenTransformer, default_neuron

NeuronFactory = Callable[..., nn.Module]


def _surrogate_settings(neuron: NeuronFactory) -> dict:
    """The configured surrogate and alpha (for the ternary neurons), if the factory has them."""
    settings = getattr(neuron, "settings", {}) or {}
    return {k: settings[k] for k in ("surrogate", "alpha") if k in settings}


class FATM(nn.Module):
    """Frequency-Aware Token Mixer. ``x [T, B, N, D] -> [T, B, N, D]`` (real-valued branch)."""

    def __init__(self, dim: int, *, groups: int, neuron: NeuronFactory):
        super().__init__()
        if dim % groups:
            raise ValueError(f"embed dim {dim} is not divisible by the {groups} wavelet groups")
        self.groups, self.group_size = groups, dim // groups
        bs = self.group_size
        ternary = _surrogate_settings(neuron)
        self.x_neuron = neuron()
        self.dwt = HaarDWT2d(1.0, **ternary)
        self.dwt_bn = nn.BatchNorm2d(dim)
        self.haar_neuron = neuron()
        self.haar_weight = nn.Parameter(0.02 * torch.randn(groups, bs, bs))
        self.mix_bn = nn.BatchNorm2d(dim)
        self.idwt = HaarIDWT2d(1.0, **ternary)
        self.idwt_bn = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(bs, bs, 1)  # shared by the groups
        self.conv1_bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(bs, bs, 3, padding=1)
        self.conv2_bn = nn.BatchNorm2d(dim)

    def grouped(self, conv: nn.Module, bn: nn.Module, s: torch.Tensor) -> torch.Tensor:
        """``conv`` on each channel group as its own image, then BN over all C."""
        T, B, C, H, W = s.shape
        y = conv(s.reshape(T * B * self.groups, self.group_size, H, W))
        return bn(y.reshape(T * B, C, H, W)).reshape(T, B, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.x_neuron(tokens_to_grid(x))  # [T, B, C, H, W] spikes
        T, B, C, H, W = s.shape
        a = self.haar_neuron(seq_to_batch(self.dwt_bn, self.dwt(s)))
        a = a.reshape(T, B, self.groups, self.group_size, H, W)
        a = torch.einsum("tbgjhw,gjk->tbgkhw", a, self.haar_weight).reshape(T, B, C, H, W)
        wave = seq_to_batch(self.idwt_bn, self.idwt(seq_to_batch(self.mix_bn, a)))
        out = wave + self.grouped(self.conv1, self.conv1_bn, s) + self.grouped(self.conv2, self.conv2_bn, s)
        return grid_to_tokens(out)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, group_size={self.group_size}"


class SWBlock(nn.Module):
    """``x = x + FATM(x); x = x + MLP(x)`` (pre-activation MLP). ``x [T, B, N, D]``."""

    def __init__(self, dim: int, *, groups: int, mlp_ratio: float, neuron: NeuronFactory):
        super().__init__()
        self.mixer = FATM(dim, groups=groups, neuron=neuron)
        self.mlp = PreActMLP(dim, int(dim * mlp_ratio), neuron=neuron)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(x)
        return x + self.mlp(x)


# bic-L/Spiking-Wavelet-Transformer cifar10-100/model.py: the SDT-style SPS, then per block a
# FATM "mixer" (haar_weight, haar_{forward,multiply,inverse}_bn, conv1/conv2 with their BNs)
# and the pre-activation MLP (fc1/fc2 conv + bn).
SWFORMER_LAYOUT = OfficialLayout(
    family="SWformer", repo="bic-L/Spiking-Wavelet-Transformer (cifar10-100/model.py)",
    rename=SPS_RENAME + (
        (r"block\.(\d+)\.mixer\.haar_weight", r"blocks.\1.mixer.haar_weight"),
        (r"block\.(\d+)\.mixer\.haar_forward_bn\.(.+)", r"blocks.\1.mixer.dwt_bn.\2"),
        (r"block\.(\d+)\.mixer\.haar_multiply_bn\.(.+)", r"blocks.\1.mixer.mix_bn.\2"),
        (r"block\.(\d+)\.mixer\.haar_inverse_bn\.(.+)", r"blocks.\1.mixer.idwt_bn.\2"),
        (r"block\.(\d+)\.mixer\.(conv[12](?:_bn)?)\.(.+)", r"blocks.\1.mixer.\2.\3"),
    ) + BLOCK_RENAME,
    checkpoints={
        "swformer_4_384": PublishedCheckpoint(
            "https://github.com/bic-L/Spiking-Wavelet-Transformer/releases/tag/checkpoints",
            "imagenet", 75.34, "ImageNet checkpoints only (8-512); no CIFAR checkpoint is "
            "released, so this is the layout the CIFAR code saves"),
    },
)


class SWformer(TokenTransformer):
    """Spiking Wavelet Transformer for static images or pre-encoded input.

    ``x [B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` -> logits ``[B, classes]``
    (mean over T), or ``[T, B, classes]`` with ``per_step_logits=True``.
    """

    official_layout = SWFORMER_LAYOUT

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 4, num_heads: int = 12, mlp_ratio: float = 4.0,
                 T: int = 4, wavelet_groups: int = 4,
                 pool_stages: Sequence[bool] = (False, False, True, True),
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.embed_dim, self.num_heads = num_classes, embed_dim, num_heads
        neuron = neuron or default_neuron(T)
        self.patch_embed = MSSPS(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim,
                                 pool_stages=pool_stages, neuron=neuron)
        grid = self.patch_embed.grid
        if grid & (grid - 1):
            raise ValueError(f"SWformer's Haar transform needs a power-of-two token grid; image "
                             f"size {img_size} gives {grid}x{grid}")
        self.blocks = nn.ModuleList(SWBlock(embed_dim, groups=wavelet_groups, mlp_ratio=mlp_ratio,
                                            neuron=neuron) for _ in range(depth))
        self.head = MeanTokenHead(embed_dim, num_classes, per_step=per_step_logits)
        if isinstance(self.head.fc, nn.Linear):  # official: trunc_normal on nn.Linear only
            nn.init.trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)


@register_model
def swformer_4_384(**overrides) -> SWformer:
    """SWformer-4-384, CIFAR (4 wavelet groups of 96 channels): 7,479,226 parameters at 10 classes."""
    arch = dict(depth=4, embed_dim=384, wavelet_groups=4)
    return SWformer(**{**arch, **overrides})
