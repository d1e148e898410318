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

Event cameras (``embedding="dvs"``, ``qkformer_dvs_2_256``, official ``cifar10-dvs/model.py``):
two stages only, D/2 and D (128/256), with ``early_depths=(1,)`` (one QKTA block) and
``depth=1`` (one SSA block); the first embedding is :class:`PyramidSPEDS` (x8: 128x128 frames ->
16x16 tokens), then SPEDS-2 -> 8x8. 16 heads, mlp_ratio 1 (CIFAR10-DVS) or 4 (DVS128 Gesture).

Choices and quirks: the official init touches only the head (trunc_normal std 0.02; convs keep
PyTorch's default, which equals ``nn.Linear``'s), done here the same way. The unused
``MaxPool1d`` of the official SSA and its drop-path rate (passed, never applied) are not built.
Parameter counts equal the official code's: CIFAR-10 6,706,234; HST-10-384 16,473,688;
CIFAR10-DVS 1,504,138; DVS128 Gesture 1,999,371 (the paper says 1.50M for both).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import SSA, MeanTokenHead, SpikingBlock, SpikingMLP
from ..layers.input_check import to_time_major
from ..layers.qk_attention import QKTokenAttention
from ..layers.multistep import ConvBN
from ..layers.speds import SPEDS, ConvBNPoolSN
from ..registry import UnknownNameError
from ._registry import register_model
from .official_weights import OfficialLayout
from .spikformer import NeuronFactory, TokenTransformer, default_neuron

#: SPEDS layouts: (stem_pool, body_pools) of the first embedding, then of the ones between
#: stages. ``"dvs"``'s first embedding is :class:`PyramidSPEDS` (x8), not a plain SPEDS.
EMBEDDINGS = {
    "cifar": ((False, (False,)), (None, (False, True))),  # 32 -> 32 -> 16 -> 8
    "imagenet": ((True, (True, False)), (None, (True, False))),  # 224 -> 56 -> 28 -> 14
    "dvs": (None, (None, (False, True))),  # 128 -> 16 -> 8 (two stages)
}


class PyramidSPEDS(SPEDS):
    """The event-camera SPEDS-1 (official ``cifar10-dvs/model.py`` ``PatchEmbedInit``):
    four ``ConvBNPoolSN`` doubling the width, ``in -> D/8 -> D/4 (pool) -> D/2 (pool) -> D
    (pool)``, i.e. x8 downsampling (128 -> 16); the shortcut ``SN(BN(Conv1x1 stride 4))`` starts
    from the D/4 spikes, so ``s`` (SPEDS's stem) is the first two convs.

    ``x [T, B, C_in, H, W] -> [T, B, D, ceil(H/8), ceil(W/8)]``, values in {0, 1, 2}.
    """

    def __init__(self, in_chans: int, embed_dim: int, *, neuron: NeuronFactory):
        nn.Module.__init__(self)  # SPEDS's forward, a different layout of its three parts
        if embed_dim % 8:
            raise ValueError(f"the event-camera SPEDS needs a width divisible by 8 (it starts "
                             f"at width / 8), got {embed_dim}")
        d = embed_dim
        self.stem = nn.Sequential(ConvBNPoolSN(in_chans, d // 8, pool=False, neuron=neuron),
                                  ConvBNPoolSN(d // 8, d // 4, pool=True, neuron=neuron))
        self.main = nn.Sequential(ConvBNPoolSN(d // 4, d // 2, pool=True, neuron=neuron),
                                  ConvBNPoolSN(d // 2, d, pool=True, neuron=neuron))
        self.shortcut = ConvBN(d // 4, d, kernel_size=1, stride=4, padding=0)
        self.shortcut_neuron = neuron()


def _qkformer_layout(embedding: str, stem: dict[str, str], main: dict[str, str]) -> OfficialLayout:
    """zhouchenlin2096/QKFormer keys: ``patch_embed{i}`` (SPEDS: ``proj*_conv/bn`` on the main
    path, ``proj_res_*`` the shortcut), ``stage{i}.j.{tssa|ssa|attn}`` and ``.mlp``. Which
    ``proj*`` is the stem and which the main path differs per file: ``stem`` and ``main`` map
    (embedding index, official conv name) to the stlib module."""
    convs = [(rf"patch_embed{i + 1}\.{name}_(conv|bn)\.(.+)", rf"patch_embeds.{i}.{module}.conv.\1.\2")
             for table in (stem, main) for (i, name), module in table.items()]
    stages = [rule for i in range(3) for rule in (
        (rf"patch_embed{i + 1}\.proj_res_(conv|bn)\.(.+)", rf"patch_embeds.{i}.shortcut.\1.\2"),
        (rf"stage{i + 1}\.(\d+)\.(?:tssa|ssa|attn)\.(q|k|v|proj)_conv\.(.+)",
         rf"stages.{i}.\1.attn.\2.linear.\3"),
        (rf"stage{i + 1}\.(\d+)\.(?:tssa|ssa|attn)\.(q|k|v|proj)_bn\.(.+)", rf"stages.{i}.\1.attn.\2.bn.\3"),
        (rf"stage{i + 1}\.(\d+)\.mlp\.(?:mlp|fc)([12])_conv\.(.+)", rf"stages.{i}.\1.mlp.fc\2.linear.\3"),
        (rf"stage{i + 1}\.(\d+)\.mlp\.(?:mlp|fc)([12])_bn\.(.+)", rf"stages.{i}.\1.mlp.fc\2.bn.\3"),
    )]
    return OfficialLayout(
        family=f"QKFormer ({embedding})",
        repo={"cifar": "zhouchenlin2096/QKFormer cifar10/model.py",
              "imagenet": "zhouchenlin2096/QKFormer imagenet/qkformer.py",
              "dvs": "zhouchenlin2096/QKFormer cifar10-dvs/model.py"}[embedding],
        rename=(*convs, *stages, (r"head\.(weight|bias)", r"head.fc.\1")))


QKFORMER_LAYOUTS = {
    "cifar": _qkformer_layout("cifar", {(0, "proj"): "stem"},
                              {(0, "proj1"): "main.0", (1, "proj3"): "main.0", (1, "proj4"): "main.1",
                               (2, "proj3"): "main.0", (2, "proj4"): "main.1"}),
    "imagenet": _qkformer_layout("imagenet", {(0, "proj"): "stem"},
                                 {(0, "proj1"): "main.0", (0, "proj2"): "main.1",
                                  (1, "proj3"): "main.0", (1, "proj4"): "main.1",
                                  (2, "proj3"): "main.0", (2, "proj4"): "main.1"}),
    "dvs": _qkformer_layout("dvs", {(0, "proj"): "stem.0", (0, "proj1"): "stem.1"},
                            {(0, "proj2"): "main.0", (0, "proj3"): "main.1",
                             (1, "proj"): "main.0", (1, "proj4"): "main.1"}),
}


class BatchCoupledSSA(SSA):
    """QKFormer's official SSA, quirk included: its output neuron runs on the flattened
    ``[T*B, ...]`` tensor, i.e. over T*B "time steps" (t-major), so its membrane carries from
    one sample of the batch to the next and the output depends on the batch it came in.
    Only for reproducing the official code's numbers at its batch size.
    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.spiking_heads(x)  # [T, B, h, N, d]
        y = self.attn_neuron(self.merge((q @ k.transpose(-2, -1)) @ v * self.scale))
        z = self.proj(y)  # [T, B, N, D]
        return self.proj_neuron(z.flatten(0, 1)).reshape(z.shape)  # T*B steps


class QKFormer(TokenTransformer):
    """Hierarchical spiking transformer with Q-K attention (``forward`` and ``forward_head``
    come from :class:`~stlib.models.spikformer.TokenTransformer`; the features are staged).

    ``x [B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` -> logits ``[B, classes]``
    (mean over T), or ``[T, B, classes]`` with ``per_step_logits=True``.

    Official checkpoints load by the layout of the official file for ``embedding``
    (:data:`QKFORMER_LAYOUTS`). ``batch_coupled_ssa=True`` builds the last stage with
    :class:`BatchCoupledSSA`, the official output neuron that runs over the flattened
    ``T*B`` axis; the default keeps every sample apart.
    """

    def official_layout(self) -> OfficialLayout:
        return QKFORMER_LAYOUTS[self.embedding]

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 2, num_heads: int = 8,
                 early_depths: Sequence[int] = (1, 1), mlp_ratio: float = 4.0, T: int = 4,
                 embedding: str = "cifar", attn_scale: float = 0.125,
                 attn_v_threshold: float = 0.5, batch_coupled_ssa: bool = False,
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        if embedding not in EMBEDDINGS:
            raise UnknownNameError("QKFormer embedding", embedding, EMBEDDINGS)
        n_early = 1 if embedding == "dvs" else 2  # the event model has two stages
        if len(early_depths) != n_early:
            raise ValueError(f"early_depths gives the blocks of the {n_early} stage(s) before "
                             f"the last for embedding {embedding!r}, got {early_depths!r}")
        factor = 2 ** n_early  # the first stage is embed_dim / factor wide
        if embed_dim % (factor * num_heads):
            raise ValueError(f"embed_dim {embed_dim} must be divisible by {factor} * num_heads "
                             f"({factor * num_heads}): the first stage is embed_dim / {factor} "
                             f"wide")
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.embed_dim, self.embedding = num_classes, embed_dim, embedding
        neuron = neuron or default_neuron(T)
        self.neuron = neuron
        first, between = EMBEDDINGS[embedding]
        widths = [embed_dim // 2 ** i for i in range(n_early, -1, -1)]  # D/4, D/2, D or D/2, D
        if embedding == "dvs":
            embeds = [PyramidSPEDS(in_chans, widths[0], neuron=neuron)]
        else:
            embeds = [SPEDS(in_chans, widths[0], stem_pool=first[0], body_pools=first[1],
                            neuron=neuron)]
        embeds += [SPEDS(a, b, stem_pool=between[0], body_pools=between[1], neuron=neuron)
                   for a, b in zip(widths, widths[1:])]
        self.patch_embeds = nn.ModuleList(embeds)

        def block(dim: int, attn_layer: type[nn.Module]) -> SpikingBlock:
            ssa = issubclass(attn_layer, SSA)
            extra = dict(qkv_bias=False) if ssa else {}
            scale = attn_scale if ssa else 1.0  # QKTA has no scale
            attn = attn_layer(dim, num_heads=num_heads, neuron=neuron, scale=scale,
                              attn_v_threshold=attn_v_threshold, **extra)
            return SpikingBlock(attn=attn, mlp=SpikingMLP(dim, int(dim * mlp_ratio), neuron=neuron))

        depths = [*early_depths, depth]
        layers = [QKTokenAttention] * n_early + [BatchCoupledSSA if batch_coupled_ssa else SSA]
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


@register_model
def qkformer_dvs_2_256(**overrides) -> QKFormer:
    """QKFormer on event frames (official ``cifar10-dvs/model.py``: 128x128 2-channel frames,
    T=16; stages 128/256 with 1 QKTA + 1 SSA block, 16 heads, mlp_ratio 1): 1,504,138
    parameters at 10 classes (CIFAR10-DVS). DVS128 Gesture uses ``mlp_ratio=4`` and 11 classes:
    1,999,371 (``dvs128-gesture/model.py``)."""
    arch = dict(img_size=128, in_chans=2, num_classes=10, T=16, embed_dim=256,
                early_depths=(1,), depth=1, num_heads=16, mlp_ratio=1.0, embedding="dvs")
    return _create_qkformer(**{**arch, **overrides})
