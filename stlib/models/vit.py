"""ViT baseline (ANN) with Spikformer's tokens: the non-spiking reference for the zoo.

A standard pre-norm Vision Transformer (Dosovitskiy et al., ICLR 2021; timm's ``Block``:
softmax attention, GELU MLP, LayerNorm) on exactly Spikformer's token grid: the stem is
Spikformer's SPS (:class:`stlib.layers.SPS`, 4 Conv3x3-BN stages with widths D/8..D, pools on
the last two for CIFAR, plus the conv RPE) with **ReLU in place of every spiking neuron**.
So CIFAR gives 8x8 = 64 tokens of width D and the convolutional parameters are Spikformer's;
only the token mixer, the MLP activation and the norms differ (no positional embedding: the
RPE conv plays that role, as in Spikformer).

Head: final LayerNorm, mean over tokens, Linear. ViT-4-384 (CIFAR, 10 classes) has
9,303,994 parameters (Spikformer-4-384: 9,324,730).

Time: an ANN has no time steps. ``neuron`` is accepted (so the trainer and a neuron sweep
can pass it) and ignored. ``[B, C, H, W]`` runs once; ``[T, B, C, H, W]`` (e.g. a rate
encoder's output) runs every step as a batch and averages the logits over T, which is the
same thing for direct encoding. ``per_step_logits=True`` returns ``[T, B, classes]`` (the
single-pass logits repeated T times for 4-D input).

Meta-transformer switches (STEP's component-test "ViT" rows; STEP has no ViT code, so the
variants follow the spiking hosts'): ``embed`` names a tokenizer of
:data:`stlib.layers.ablation.EMBEDDINGS` built with ReLU for its neurons (``"sps"``: the ReLU
SPS, the default; ``sps_1conv`` / ``vit_embed`` feeds the analog image, no input ReLU);
``attn="random_softmax"`` (STEP's ``random_attn``) keeps the Q and K projections at their
trunc_normal(0.02) init: timm's fused ``qkv`` Linear(D, 3D) is split into a frozen
Linear(D, 2D) for Q, K and a trainable Linear(D, D) for V (:class:`SplitQKV`; same outputs
layout and parameter count), so no optimizer, weight decay included, changes Q or K.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from timm.models.vision_transformer import Block
from torch import nn

from ..layers import SPS
from ..layers.ablation import build_embedding
from ..registry import UnknownNameError
from ..layers.init import trunc_normal_linear_init
from ..layers.input_check import to_time_major
from ._registry import register_model

NeuronFactory = Callable[..., nn.Module]


def _relu() -> nn.Module:
    """The "neuron" of the ANN stem: SPS builds one per site."""
    return nn.ReLU()


class SplitQKV(nn.Module):
    """timm's fused ``qkv = Linear(D, 3D)`` as ``qk = Linear(D, 2D)`` (frozen:
    ``requires_grad=False``) and ``v = Linear(D, D)``, taking over ``fused``'s current weights.
    ``x [..., D] -> [..., 3D]`` laid out ``[q | k | v]`` as timm's Attention expects."""

    def __init__(self, fused: nn.Linear):
        super().__init__()
        dim, bias = fused.in_features, fused.bias is not None
        self.qk, self.v = nn.Linear(dim, 2 * dim, bias=bias), nn.Linear(dim, dim, bias=bias)
        with torch.no_grad():
            for part, rows in ((self.qk, slice(0, 2 * dim)), (self.v, slice(2 * dim, None))):
                part.weight.copy_(fused.weight[rows])
                if bias:
                    part.bias.copy_(fused.bias[rows])
        self.qk.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.qk(x), self.v(x)], dim=-1)


#: ViT's ``attn`` values: timm's softmax attention, or it with random frozen Q/K
VIT_ATTENTIONS = ("softmax", "random_softmax")


class ViT(nn.Module):
    """Vision Transformer (ANN) on SPS tokens.

    ``x [B, C, H, W]`` or ``[T, B, C, H, W]`` -> logits ``[B, classes]`` (or ``[T, B, classes]``
    with ``per_step_logits=True``).
    """

    ablation_host = "vit"  # takes the switches of stlib.models.ablation

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 4, num_heads: int = 12, mlp_ratio: float = 4.0,
                 T: int = 4, pool_stages: Sequence[bool] = (False, False, True, True),
                 attn: str = "softmax", embed: str = "sps",
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        if embed_dim % num_heads:
            raise ValueError(f"embed dim {embed_dim} is not divisible by num_heads {num_heads}")
        del neuron  # an ANN: accepted for a uniform model interface, ignored
        if attn not in VIT_ATTENTIONS:
            raise UnknownNameError("ViT attention", attn, VIT_ATTENTIONS)
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.embed_dim, self.per_step = num_classes, embed_dim, per_step_logits
        self.attn, self.embed = attn, embed
        # "sps": Spikformer's SPS with ReLU; other names: the ablation tokenizers, ReLU neurons
        self.patch_embed = build_embedding(embed, host="vit", native=SPS, img_size=img_size,
                                           in_chans=in_chans, embed_dim=embed_dim,
                                           pool_stages=pool_stages, neuron=_relu)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True)
                                    for _ in range(depth))
        for block in self.blocks:  # an Identity on the MLP input: the Grad-CAM target
            block.mlp = nn.Sequential(nn.Identity(), block.mlp)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(trunc_normal_linear_init)
        if attn == "random_softmax":  # after the init: Q, K stay at trunc_normal(0.02), 0
            for block in self.blocks:
                block.attn.qkv = SplitQKV(block.attn.qkv)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        steps = self.T if x.dim() == 5 else 1  # an image runs once: every step would be equal
        x = to_time_major(x, T=steps, in_chans=self.in_chans, img_size=self.img_size, model="ViT")
        x = self.patch_embed(x)  # [T', B, N, D]
        tokens = x.flatten(0, 1)  # [T'*B, N, D]
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens).reshape(x.shape)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x.mean(2))  # [T', B, classes]
        if self.per_step:
            return logits.expand(self.T, *logits.shape[1:])
        return logits.mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def cam_target_layer(self) -> nn.Module:
        """Grad-CAM's default target: the input of the last block's MLP (``[T'*B, N, D]``)."""
        return self.blocks[-1].mlp[0]


@register_model
def vit_4_384(**overrides) -> ViT:
    """ViT-4-384 (ANN) on Spikformer-4-384's CIFAR tokens (12 heads): 9,303,994 parameters."""
    arch = dict(depth=4, embed_dim=384, num_heads=12)
    return ViT(**{**arch, **overrides})
