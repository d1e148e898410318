"""Spikformer: When Spiking Neural Network Meets Transformer (Zhou et al., ICLR 2023).

Paper: https://arxiv.org/abs/2209.15425 ; official code: ZK-Zhou/spikformer (re-implemented
from the architecture facts in shared/reference/MODELS-1.md, section 1).

Figure 2 of the paper, top to bottom::

    image -> (direct encoding: repeat T) -> SPS (4 conv stages + RPE) -> L x [SSA + MLP]
          -> mean over tokens -> Linear -> mean over T -> logits

Quirk of the official code: every block builds two ``nn.LayerNorm`` that are never used
(6,144 parameters at 4-384). They are not built here, so Spikformer-4-384 for 10 classes has
9,324,730 parameters (the paper's "9.32M"; the official code counts 9,330,874).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..layers import SPS, MeanTokenHead, SpikingBlock, SpikingMLP, get_attention
from ._registry import register_model

NeuronFactory = Callable[..., nn.Module]


def default_neuron(T: int) -> NeuronFactory:
    """The papers' neuron: spikingjelly ``MultiStepLIFNode(tau=2.0, detach_reset=True)``."""
    from ..neurons import neuron_factory

    return neuron_factory("LIF", T=T, detach_reset=True)


class Spikformer(nn.Module):
    """Spikformer for static images or pre-encoded input.

    ``x [B, C, H, W]`` (repeated over T: direct encoding) or ``[T, B, C, H, W]`` (an encoder's
    output) -> logits ``[B, classes]`` (the mean over T), or ``[T, B, classes]`` with
    ``per_step_logits=True``.
    """

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 4, num_heads: int = 12,
                 mlp_ratio: float = 4.0, T: int = 4,
                 pool_stages: Sequence[bool] = (False, False, True, True),
                 attn: str = "ssa", attn_scale: float = 0.125, attn_v_threshold: float = 0.5,
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.embed_dim = num_classes, embed_dim
        neuron = neuron or default_neuron(T)
        self.neuron = neuron
        attn_layer = get_attention(attn)
        self.patch_embed = SPS(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim,
                               pool_stages=pool_stages, neuron=neuron)
        hidden = int(embed_dim * mlp_ratio)
        self.blocks = nn.ModuleList(
            SpikingBlock(
                attn=attn_layer(embed_dim, num_heads=num_heads, neuron=neuron, scale=attn_scale,
                                attn_v_threshold=attn_v_threshold),
                mlp=SpikingMLP(embed_dim, hidden, neuron=neuron),
            )
            for _ in range(depth)
        )
        self.head = MeanTokenHead(embed_dim, num_classes, per_step=per_step_logits)
        self.apply(_init_weights)

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[T, B, C, H, W]`` (direct encoding); 5-D input is checked."""
        if x.dim() == 4:
            return x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        if x.dim() != 5:
            raise ValueError(f"Spikformer expects [B, C, H, W] or [T, B, C, H, W], got shape "
                             f"{tuple(x.shape)}")
        if x.shape[0] != self.T:
            raise ValueError(f"input has {x.shape[0]} time steps, the model was built for "
                             f"T={self.T}")
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_sequence(x)
        if x.shape[2] != self.in_chans or x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            raise ValueError(f"input {tuple(x.shape[2:])} does not match the model's "
                             f"(C, H, W) = ({self.in_chans}, {self.img_size}, {self.img_size})")
        x = self.patch_embed(x)  # [T, B, N, D]
        for block in self.blocks:
            x = block(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def cam_target_layer(self) -> nn.Module:
        """Grad-CAM's default target: the input of the last block's MLP (tokens [T, B, N, D])."""
        return self.blocks[-1].mlp.input


def _init_weights(module: nn.Module) -> None:
    """The official init: truncated normal (std 0.02) for Linear weights, zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _create_spikformer(**kwargs) -> Spikformer:
    return Spikformer(**kwargs)


@register_model
def spikformer_4_384(**overrides) -> Spikformer:
    """Spikformer-4-384, CIFAR (32x32, patch 4, 12 heads): 9,324,730 parameters at 10 classes."""
    arch = dict(depth=4, embed_dim=384, num_heads=12)
    return _create_spikformer(**{**arch, **overrides})


@register_model
def spikformer_4_256(**overrides) -> Spikformer:
    """Spikformer-4-256, CIFAR (16 heads)."""
    arch = dict(depth=4, embed_dim=256, num_heads=16)
    return _create_spikformer(**{**arch, **overrides})


@register_model
def spikformer_2_384(**overrides) -> Spikformer:
    """Spikformer-2-384, CIFAR (12 heads)."""
    arch = dict(depth=2, embed_dim=384, num_heads=12)
    return _create_spikformer(**{**arch, **overrides})
