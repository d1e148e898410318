"""E-SpikeFormer / Spike-Driven Transformer v3 (Yao, Qiu et al., TPAMI 2025).

Paper: "Scaling Spike-driven Transformer with Efficient Spike Firing Approximation Training"
(https://arxiv.org/abs/2411.16061); official code: BICLab/Spike-Driven-Transformer-V3
``SDT_V3/Classification/Model_Base/models.py`` (``Efficient_Spiking_Transformer_{t,s,m,l}``),
re-implemented from the architecture facts in shared/reference/MODELS-2.md, section 8.

Meta-SpikeFormer's layout (:mod:`stlib.models.sdt_v2`) with three changes::

    image -> DS1_1 (conv7x7/2-BN) -> ConvBlock(c0/2) -> DS1_2 -> ConvBlock(c0) -> DS2
          -> 2 x ConvBlock(c1) -> DS3 -> 6 x Block(c2) -> DS4 (stride 1) -> 2 x Block(c3)
          -> mean over tokens -> MultiSpike(norm=1) -> Linear

* the neuron is :class:`~stlib.neurons.MultiSpike`, ``round(clamp(x, 0, 4)) / 4`` with a
  straight-through gradient (Spike Firing Approximation: integer counts in training, sent as
  up to 4 binary spikes over 4 virtual steps at inference), and there is no time loop:
  ``T = 1`` by default (the official input is ``[B, 3, 224, 224]``);
* the separable convs put a neuron before each of their three convs (:class:`SpikingSepConv`);
* each transformer block is ``x += SepConv_3x3(x); x += LinearSDSA(x); x += MLP(x)``:
  the attention (:class:`~stlib.layers.spike_driven.LinearSDSA`) has 1x1 Q, K (``C -> C``)
  and V (``C -> 4C``), ``Y = SN((Q K^T) V * 2 / sqrt(C / h))`` and a ``4C -> C`` projection.

The head neuron is ``MultiSpike(norm=1)``: it passes the integer count 0..4 to the
classifier. Swapping the neuron (``neuron=LIF``) swaps every site; the head then uses that
neuron as is. Parameters (1000 classes, equal to the official code): t 2,702,048; s
5,105,608 ("5.1M"); m 10,023,112 ("10M"); l 18,987,504 ("19M"). The README's published
ImageNet top-1 (T=1, D=4, 200 epochs from scratch): 78.5 (10M) and 79.8 (19M); the 5.1M
checkpoint (https://drive.google.com/file/d/1LMkOTPehDNpQE79bvB7jFTf6UzDjpAHQ/view) is
released without a figure in the README. Logits equal the official code's (0.0 in float64,
all four sizes at 224 px, random weights and BN statistics, eval mode).

CIFAR (no official config, stlib's choice): ``strides=(1, 1, 2, 2, 1)``, 32 -> 8 (64 tokens),
as ``sdt_v2_15m_cifar``. The official factories' ``patch_size``, ``sr_ratios`` and
``norm_layer`` are never used by the official model and have no stlib counterpart.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers.grid import grid_to_tokens, tokens_to_grid
from ..layers.spike_driven import PreActMLP
from ..neurons import neuron_factory
from ._registry import register_model
from .official_weights import OfficialLayout, PublishedCheckpoint
from .sdt_v2 import (CONV_MLP_RENAME, TOKEN_MLP_RENAME, MetaSpikeFormer, SpikingSepConv,
                     _nested, multispike_norm)
from .spikformer import NeuronFactory, build_blocks


class TokenSepConv(nn.Module):
    """:class:`SpikingSepConv` (3x3) on tokens of a square grid: the transformer block's conv
    mixer. ``x [T, B, N, D] -> [T, B, N, D]``."""

    def __init__(self, dim: int, *, neuron: NeuronFactory, kernel_size: int = 3):
        super().__init__()
        self.sep_conv = SpikingSepConv(dim, neuron=neuron, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grid_to_tokens(self.sep_conv(tokens_to_grid(x)))


def _sep_conv_rules(official: str, ours: str) -> tuple[tuple[str, str], ...]:
    """Official ``SepConv_Spike``: ``{pwconv1, dwconv, pwconv2}.{0: conv, 1: BN}``."""
    return tuple((rf"{official}\.{name}\.{i}\.(?P<leaf>.+)", rf"{ours}.{mine}.{part}.\g<leaf>")
                 for name, mine in (("pwconv1", "pw1"), ("dwconv", "dw"), ("pwconv2", "pw2"))
                 for i, part in (("0", "conv"), ("1", "bn")))


_CONV_BLOCK = (*_sep_conv_rules(r"Conv", "sep_conv"), *CONV_MLP_RENAME)
# attention: {q,k,v,proj}_conv = Sequential(1x1 conv, BN) -> LinearBN
_TRANSFORMER_BLOCK = (
    *_sep_conv_rules(r"conv", "conv.sep_conv"),
    *((rf"attn\.(?P<x>q|k|v|proj)_conv\.{i}\.(?P<leaf>.+)", rf"attn.\g<x>.{part}.\g<leaf>")
      for i, part in (("0", "linear"), ("1", "bn"))),
    *TOKEN_MLP_RENAME,
)
# Model_Base/models.py: downsample1_1, ConvBlock1_1, downsample1_2, ConvBlock1_2, downsample2,
# ConvBlock2_1, ConvBlock2_2, downsample3, block3, downsample4, block4, head
E_SPIKEFORMER_LAYOUT = OfficialLayout(
    family="E-SpikeFormer (SDT v3)",
    repo="BICLab/Spike-Driven-Transformer-V3 (SDT_V3/Classification/Model_Base/models.py)",
    rename=(
        *((rf"{name}\.encode_(conv|bn)\.(.+)", rf"{stage}.conv.\1.\2") for name, stage in (
            ("downsample1_1", "stage1.0"), ("downsample1_2", "stage1.2"),
            ("downsample2", "stage2.0"), ("downsample3", "stage3.0"), ("downsample4", "stage4.0"))),
        *_nested([(r"ConvBlock1_1\.0", "stage1.1"), (r"ConvBlock1_2\.0", "stage1.3"),
                  (r"ConvBlock2_1\.0", "stage2.1"), (r"ConvBlock2_2\.0", "stage2.2")], _CONV_BLOCK),
        *_nested([(r"block3\.(?P<i>\d+)", r"stage3.1.blocks.\g<i>"),
                  (r"block4\.(?P<i>\d+)", r"stage4.1.blocks.\g<i>")], _TRANSFORMER_BLOCK),
        (r"head\.(weight|bias)", r"head.fc.\1"),
    ),
    checkpoints={  # Train_Base.md; the 5.1M file has no published figure in the README
        "e_spikeformer_m": PublishedCheckpoint(
            "https://drive.google.com/file/d/1pHrampLjyE1kLr-4DS1WgSdnCVPzL6Tq/view", "imagenet",
            78.5, "10M, T=1, D=4"),
        "e_spikeformer_l": PublishedCheckpoint(
            "https://drive.google.com/file/d/1pSGCOzrZNgHDxQXAp-Uelx61snIbQC1H/view", "imagenet",
            79.8, "19M, T=1, D=4"),
    },
)


class ESpikeFormer(MetaSpikeFormer):
    """E-SpikeFormer (SDT v3) for static images or pre-encoded input.

    ``x [B, C, H, W]`` (repeated T times; T = 1 by default) or ``[T, B, C, H, W]`` -> logits
    ``[B, classes]`` (mean over T), or ``[T, B, classes]`` with ``per_step_logits=True``.
    Size keys as :class:`~stlib.models.sdt_v2.MetaSpikeFormer` (``embed_dim`` = c2,
    ``last_dim`` = c3, ``depth`` transformer blocks split 6 + 2). ``neuron=None`` is
    ``MultiSpike`` (D = 4). ``attn_scale=None`` is the official ``2 / sqrt(C / h)`` of each
    stage's width. Official checkpoints load by :data:`E_SPIKEFORMER_LAYOUT`.
    """

    official_layout = E_SPIKEFORMER_LAYOUT
    sep_conv = SpikingSepConv

    def __init__(self, *, T: int = 1, neuron: NeuronFactory | None = None, attn: str = "sdsa_linear",
                 attn_scale: float | None = None, attn_v_threshold: float | None = None,
                 **kwargs: Any):
        super().__init__(T=T, neuron=neuron or neuron_factory("MultiSpike", T=T), attn=attn,
                         attn_scale=attn_scale, attn_v_threshold=attn_v_threshold, **kwargs)

    def build_token_blocks(self, depth: int, dim: int, *, num_heads: int, attn_scale: float | None,
                           **block_args) -> nn.ModuleList:
        scale = 2 * (dim // num_heads) ** -0.5 if attn_scale is None else attn_scale
        return build_blocks(depth, dim, num_heads=num_heads, attn_scale=scale, mlp_layer=PreActMLP,
                            conv_layer=TokenSepConv, **block_args)

    def head_neuron(self, neuron: NeuronFactory) -> NeuronFactory:
        return multispike_norm(neuron, 1.0)  # integer counts into the classifier


def _create(**kwargs) -> ESpikeFormer:
    return ESpikeFormer(**kwargs)


# (c2, c3) of the official t / s / m / l widths; c0 = c2 / 4, c1 = c2 / 2
_WIDTHS = {"t": (96, 128), "s": (128, 192), "m": (192, 240), "l": (256, 360)}


def _arch(size: str) -> dict[str, Any]:
    embed_dim, last_dim = _WIDTHS[size]
    return dict(embed_dim=embed_dim, last_dim=last_dim, depth=8, num_heads=8)


@register_model
def e_spikeformer_t(**overrides) -> ESpikeFormer:
    """E-SpikeFormer t (official ``Efficient_Spiking_Transformer_t``), ImageNet, widths
    24/48/96/128: 2,702,048 parameters."""
    return _create(**{**_arch("t"), **overrides})


@register_model
def e_spikeformer_s(**overrides) -> ESpikeFormer:
    """E-SpikeFormer s, 5.1M (official ``Efficient_Spiking_Transformer_s``), ImageNet, widths
    32/64/128/192: 5,105,608 parameters."""
    return _create(**{**_arch("s"), **overrides})


@register_model
def e_spikeformer_m(**overrides) -> ESpikeFormer:
    """E-SpikeFormer m, 10M (official ``Efficient_Spiking_Transformer_m``), ImageNet, widths
    48/96/192/240: 10,023,112 parameters; published 78.5 top-1 (T=1, D=4)."""
    return _create(**{**_arch("m"), **overrides})


@register_model
def e_spikeformer_l(**overrides) -> ESpikeFormer:
    """E-SpikeFormer l, 19M (official ``Efficient_Spiking_Transformer_l``), ImageNet, widths
    64/128/256/360: 18,987,504 parameters; published 79.8 top-1 (T=1, D=4)."""
    return _create(**{**_arch("l"), **overrides})


@register_model
def e_spikeformer_s_cifar(**overrides) -> ESpikeFormer:
    """E-SpikeFormer s widths on CIFAR (no official config): strides (1, 1, 2, 2, 1),
    32 -> 8 (64 tokens), 10 classes."""
    return _create(**{**_arch("s"), "img_size": 32, "num_classes": 10, "strides": (1, 1, 2, 2, 1),
                      **overrides})
