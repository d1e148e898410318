"""QKFormer: Hierarchical Spiking Transformer using Q-K Attention (Zhou et al., NeurIPS 2024).

Paper: https://arxiv.org/abs/2403.16552 ; official code: zhouchenlin2096/QKFormer (re-implemented
from the architecture facts in shared/reference/MODELS-1.md, section 5).

Figure 1 of the paper, top to bottom::

    image -> (direct encoding: repeat T) -> SPEDS-1 -> stage 1: QKTA blocks (D/4)
          -> SPEDS-2 (/2) -> stage 2: QKTA blocks (D/2)
          -> SPEDS-3 (/2) -> stage 3: SSA blocks (D)
          -> mean over tokens -> Linear -> mean over T -> logits

Every block is ``x = x + Attn(x); x = x + MLP(x)`` on spikes (SEW residuals); QKTA is
:class:`~stlib.layers.qk_attention.QKTokenAttention` (mask neuron at v_th 0.5), SSA is
Spikformer's :class:`~stlib.layers.SSA` without q/k/v biases (QKFormer uses bias-free Conv1d
there), attention neuron at 0.5, scale 0.125; SPEDS is :class:`~stlib.layers.speds.SPEDS`.

How the generic size keys map (the model is hierarchical):

* ``embed_dim`` = the last stage's width D; stages are D/4, D/2, D (96/192/384 on CIFAR);
* ``depth`` = blocks in the last (SSA) stage; ``early_depths`` = blocks in stages 1 and 2.
  The paper's "4-384" (CIFAR) is ``early_depths=(1, 1), depth=2``; "HST-10-384" (ImageNet) is
  ``early_depths=(1, 2), depth=7``. The factories' names keep the paper's total;
* ``num_heads`` = heads in every stage (the CIFAR code hard-codes 8 whatever it is given).

The quick preset (``embed_dim=64, depth=1, num_heads=4`` on 8x8 digits) builds stages of
16/32/64 channels, 1/1/1 blocks and token grids 8x8 / 4x4 / 2x2 with the CIFAR embedding; the
ImageNet embedding (x16 in all) still works on 8x8 because MaxPool(3, 2, 1) and the stride-2
shortcut both round up (grids 2x2 / 1x1 / 1x1).

Choices and quirks: the official init touches only the head (trunc_normal std 0.02; convs keep
PyTorch's default, which equals ``nn.Linear``'s), done here the same way. The unused
``MaxPool1d`` of the official SSA and its drop-path rate (passed, never applied) are not built.
Parameter counts equal the official code's: CIFAR-10 6,706,234; HST-10-384 16,473,688.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import SSA, MeanTokenHead, SpikingBlock, SpikingMLP
from ..layers.input_check import to_time_major
from ..layers.qk_attention import QKTokenAttention
from ..layers.speds import SPEDS
from ..registry import UnknownNameError
from ._registry import register_model
from .spikformer import NeuronFactory, TokenTransformer, default_neuron

#: SPEDS layouts: (stem_pool, body_pools) of the first embedding, then of the two between stages.
EMBEDDINGS = {
    "cifar": ((False, (False,)), (None, (False, True))),  # 32 -> 32 -> 16 -> 8
    "imagenet": ((True, (True, False)), (None, (True, False))),  # 224 -> 56 -> 28 -> 14
}


class QKFormer(TokenTransformer):
    """Hierarchical spiking transformer with Q-K attention (``forward`` and ``forward_head``
    come from :class:`~stlib.models.spikformer.TokenTransformer`; the features are staged).

    ``x [B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` -> logits ``[B, classes]``
    (mean over T), or ``[T, B, classes]`` with ``per_step_logits=True``.
    """

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 2, num_heads: int = 8,
                 early_depths: Sequence[int] = (1, 1), mlp_ratio: float = 4.0, T: int = 4,
                 embedding: str = "cifar", attn_scale: float = 0.125,
                 attn_v_threshold: float = 0.5, neuron: NeuronFactory | None = None,
                 per_step_logits: bool = False):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        if embedding not in EMBEDDINGS:
            raise UnknownNameError("QKFormer embedding", embedding, EMBEDDINGS)
        if embed_dim % (4 * num_heads):
            raise ValueError(f"embed_dim {embed_dim} must be divisible by 4 * num_heads "
                             f"({4 * num_heads}): the first stage is embed_dim / 4 wide")
        if len(early_depths) != 2:
            raise ValueError(f"early_depths gives the blocks of stages 1 and 2, got "
                             f"{early_depths!r}")
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.embed_dim = num_classes, embed_dim
        neuron = neuron or default_neuron(T)
        self.neuron = neuron
        first, between = EMBEDDINGS[embedding]
        widths = [embed_dim // 4, embed_dim // 2, embed_dim]
        self.patch_embeds = nn.ModuleList([
            SPEDS(in_chans, widths[0], stem_pool=first[0], body_pools=first[1], neuron=neuron),
            SPEDS(widths[0], widths[1], stem_pool=between[0], body_pools=between[1], neuron=neuron),
            SPEDS(widths[1], widths[2], stem_pool=between[0], body_pools=between[1], neuron=neuron),
        ])

        def block(dim: int, attn_layer: type[nn.Module]) -> SpikingBlock:
            extra = dict(qkv_bias=False) if attn_layer is SSA else {}
            scale = attn_scale if attn_layer is SSA else 1.0  # QKTA has no scale
            attn = attn_layer(dim, num_heads=num_heads, neuron=neuron, scale=scale,
                              attn_v_threshold=attn_v_threshold, **extra)
            return SpikingBlock(attn=attn, mlp=SpikingMLP(dim, int(dim * mlp_ratio), neuron=neuron))

        depths = [*early_depths, depth]
        layers = [QKTokenAttention, QKTokenAttention, SSA]
        self.stages = nn.ModuleList(
            nn.Sequential(*(block(w, layer) for _ in range(n)))
            for w, n, layer in zip(widths, depths, layers))
        self.head = MeanTokenHead(embed_dim, num_classes, per_step=per_step_logits)
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.fc.weight, std=0.02)
            nn.init.zeros_(self.head.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x -> tokens [T, B, N, D]`` of the last stage."""
        x = to_time_major(x, T=self.T, in_chans=self.in_chans, img_size=self.img_size,
                          model="QKFormer")  # [T, B, C, H, W]
        for embed, stage in zip(self.patch_embeds, self.stages):
            x = embed(x)  # [T, B, C, H, W]
            T, B, C, H, W = x.shape
            tokens = stage(x.flatten(3).transpose(2, 3))  # [T, B, N=H*W, C]
            x = tokens.transpose(2, 3).reshape(T, B, C, H, W)
        return tokens

    def cam_target_layer(self) -> nn.Module:
        """Grad-CAM's default target: the last stage (output tokens ``[T, B, N, D]``)."""
        return self.stages[-1]


def _create_qkformer(**kwargs) -> QKFormer:
    return QKFormer(**kwargs)


@register_model
def qkformer_4_384(**overrides) -> QKFormer:
    """QKFormer-4-384, CIFAR (32x32; stages 96/192/384 with 1/1/2 blocks, 8 heads): 6,706,234
    parameters at 10 classes, 6,740,884 at 100 (the paper's 6.74M)."""
    arch = dict(embed_dim=384, early_depths=(1, 1), depth=2, num_heads=8, embedding="cifar")
    return _create_qkformer(**{**arch, **overrides})


@register_model
def qkformer_10_384(**overrides) -> QKFormer:
    """HST-10-384, ImageNet (224x224, 1000 classes; 1/2/7 blocks, 6 heads): 16,473,688."""
    arch = dict(img_size=224, num_classes=1000, embed_dim=384, early_depths=(1, 2), depth=7,
                num_heads=6, embedding="imagenet")
    return _create_qkformer(**{**arch, **overrides})


@register_model
def qkformer_10_512(**overrides) -> QKFormer:
    """HST-10-512, ImageNet (1/2/7 blocks, 8 heads): 29,079,336."""
    arch = dict(img_size=224, num_classes=1000, embed_dim=512, early_depths=(1, 2), depth=7,
                num_heads=8, embedding="imagenet")
    return _create_qkformer(**{**arch, **overrides})


@register_model
def qkformer_10_768(**overrides) -> QKFormer:
    """HST-10-768, ImageNet (1/2/7 blocks, 12 heads): 64,962,760."""
    arch = dict(img_size=224, num_classes=1000, embed_dim=768, early_depths=(1, 2), depth=7,
                num_heads=12, embedding="imagenet")
    return _create_qkformer(**{**arch, **overrides})
