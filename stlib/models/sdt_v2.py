"""Meta-SpikeFormer / Spike-driven Transformer v2 (Yao et al., ICLR 2024).

Paper: https://arxiv.org/abs/2404.03663 ; official code: BICLab/Spike-Driven-Transformer-V2
``classification/models.py`` (re-implemented from the architecture facts in
shared/reference/MODELS-1.md, section 4).

A hierarchical "meta" architecture: two conv stages of SepConv blocks, then two stages of
transformer blocks with SDSA-3 (RepConv Q/K/V, ``SN_0.5(Q (K^T V) * s)``), all with membrane
shortcuts (real-valued residuals, a neuron before every conv)::

    image -> (repeat T) -> DS1_1 (conv7x7/2-BN, no neuron) -> ConvBlock(c0/2)
          -> DS1_2 (SN-conv3x3/2-BN) -> ConvBlock(c0) -> DS2 -> 2 x ConvBlock(c1)
          -> DS3 -> 6 x TransformerBlock(c2) -> DS4 (stride 1) -> 2 x TransformerBlock(c3)
          -> mean over tokens -> SN -> Linear -> mean over T -> logits

Size keys: ``embed_dim`` = c2, the width of the main transformer stage (the "384" of the
official ``metaspikformer_8_384``); ``depth`` = transformer blocks in all (the "8"), split
``depth - depth // 4`` in stage 3 and ``depth // 4`` in stage 4 (6 + 2); ``num_heads`` for
both transformer stages. c0 = embed_dim // 4, c1 = embed_dim // 2, c3 = ``last_dim``
(default embed_dim * 5 // 4). ``strides`` are the five downsampling strides: ImageNet
(2, 2, 2, 2, 1) takes 224 -> 14; the CIFAR variant (no official config) uses (1, 1, 2, 2, 1),
32 -> 8 (N = 64 tokens as in SDT v1; 8x8 -> 2x2 for the quick preset).

The head: a spiking neuron before the classifier, as in the paper and in the official code
since its commit d95ad13 (before it, the head LIF fed only the distillation head ``head_kd``
and the main head read the real-valued token mean; ``head_lif=False`` reproduces that older
code, with no parameter change). Quirks of the official code: DropPath modules are built but
never applied in the code's blocks (not built here), and the code always builds 6 + 2
transformer blocks (its ``depths`` only sets the unused drop-path schedule); stlib's
``depth`` splits as described above.

Parameters (1000 classes): 15,112,208 / 31,333,864 / 55,350,248 for the paper's 15.1M /
31.3M / 55.4M, equal to the official code (no dead modules; the ``--kd`` distillation head
is not built). The official ``metaspikformer_8_384`` / ``8_512`` are stlib's ``sdt_v2_31m`` /
``sdt_v2_55m``; the 15M widths have no official factory. A checkpoint trained with ``--kd``
evaluates as ``(head(x) + head_kd(x)) / 2``: both are linear maps of the same spikes, so
``load_official`` folds ``head_kd`` into ``head`` by averaging their weights and biases,
which gives the same logits. The official model defaults to T = 1 (pre-training stage) and
is fine-tuned at T = 4; the factories default to T = 4.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import torch
from torch import nn

from ..layers.multistep import ConvBN, SeqToBatch
from ..layers.grid import fit_strides, grid_to_tokens, tokens_to_grid
from ..layers.spike_driven import PreActMLP, SpikingTokenHead
from ._registry import register_model
from .official_weights import OfficialLayout, PublishedCheckpoint
from .spikformer import NeuronFactory, TokenTransformer, _init_weights, build_blocks


class SepConv(nn.Module):
    """MobileNetV2-style separable conv with neurons before the convs:
    ``BN(PW(DW7x7(SN(BN(PW(SN(x)))))))``, expansion 2, no conv bias.

    ``x [T, B, C, H, W] -> [T, B, C, H, W]`` (real-valued branch).
    """

    def __init__(self, dim: int, *, neuron: NeuronFactory, expansion: int = 2,
                 kernel_size: int = 7):
        super().__init__()
        mid = dim * expansion
        self.pw1_neuron = neuron()
        self.pw1 = ConvBN(dim, mid, kernel_size=1)
        self.dw_neuron = neuron()
        self.dw_pw2 = SeqToBatch(
            nn.Conv2d(mid, mid, kernel_size, padding=kernel_size // 2, groups=mid, bias=False),
            nn.Conv2d(mid, dim, 1, bias=False),
            nn.BatchNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw1(self.pw1_neuron(x))
        return self.dw_pw2(self.dw_neuron(x))


class SpikingSepConv(nn.Module):
    """E-SpikeFormer's separable conv (official ``SepConv_Spike``): a neuron before each of
    the three convs and a BN after each, ``BN(PW(SN(BN(DW_k(SN(BN(PW(SN(x)))))))))``,
    expansion 2, no conv bias (``k`` = 7 in the conv blocks, 3 in the transformer blocks).

    ``x [T, B, C, H, W] -> [T, B, C, H, W]`` (real-valued branch).
    """

    def __init__(self, dim: int, *, neuron: NeuronFactory, expansion: int = 2,
                 kernel_size: int = 7):
        super().__init__()
        mid = dim * expansion
        self.pw1_neuron, self.dw_neuron, self.pw2_neuron = neuron(), neuron(), neuron()
        self.pw1 = ConvBN(dim, mid, kernel_size=1)
        self.dw = ConvBN(mid, mid, kernel_size=kernel_size, groups=mid)
        self.pw2 = ConvBN(mid, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw1(self.pw1_neuron(x))
        x = self.dw(self.dw_neuron(x))
        return self.pw2(self.pw2_neuron(x))


class ConvBlock(nn.Module):
    """``x = x + SepConv(x); x = x + BN(Conv3x3(SN(BN(Conv3x3(SN(x))))))`` (hidden 4d, no bias).
    ``sep_conv`` is :class:`SepConv` (Meta-SpikeFormer) or :class:`SpikingSepConv`
    (E-SpikeFormer).

    ``x [T, B, C, H, W] -> [T, B, C, H, W]``.
    """

    def __init__(self, dim: int, *, neuron: NeuronFactory, mlp_ratio: float = 4.0,
                 sep_conv: type[nn.Module] = SepConv):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.sep_conv = sep_conv(dim, neuron=neuron)
        self.conv1_neuron = neuron()
        self.conv1 = ConvBN(dim, hidden)
        self.conv2_neuron = neuron()
        self.conv2 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.sep_conv(x)
        return x + self.conv2(self.conv2_neuron(self.conv1(self.conv1_neuron(x))))


class Downsample(nn.Module):
    """``BN(Conv(SN(x)))`` with bias; the first one (DS1_1) has no neuron (direct encoding).

    ``x [T, B, C_in, H, W] -> [T, B, C_out, H / stride, W / stride]``.
    """

    def __init__(self, in_chans: int, out_chans: int, *, kernel_size: int, stride: int,
                 neuron: NeuronFactory | None):
        super().__init__()
        self.neuron = neuron() if neuron is not None else nn.Identity()
        self.conv = ConvBN(in_chans, out_chans, kernel_size, stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.neuron(x))


class TokenStage(nn.Module):
    """Transformer blocks on a feature map: ``[T, B, C, H, W]`` -> tokens -> blocks -> grid."""

    def __init__(self, blocks: nn.ModuleList):
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = grid_to_tokens(x)  # [T, B, N, C]
        for block in self.blocks:
            tokens = block(tokens)
        return tokens_to_grid(tokens)  # [T, B, C, H, W]


def multispike_norm(neuron: NeuronFactory, norm: float) -> NeuronFactory:
    """A site's neuron with MultiSpike's ``norm`` set (E-SpikeFormer's counting head, QSD's
    attention); any other neuron type is returned as it is."""
    if getattr(neuron, "name", None) == "MultiSpike":
        return functools.partial(neuron, norm=norm)
    return neuron


def _fold_distillation_head(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``--kd`` checkpoints: eval logits are ``(head + head_kd) / 2`` of the same input."""
    for leaf in ("weight", "bias"):
        if f"head_kd.{leaf}" in state:
            state[f"head.{leaf}"] = (state[f"head.{leaf}"] + state.pop(f"head_kd.{leaf}")) / 2
    return state


def _repconv_rules(official: str, ours: str) -> tuple[tuple[str, str], ...]:
    """A RepConv (1x1 conv, BN-and-pad, depthwise 3x3 + 1x1 + BN) then BN, as in the
    official ``{q,k,v,proj}_conv = Sequential(RepConv, BN)``."""
    return (
        (rf"{official}\.0\.body\.0\.(?P<leaf>.+)", rf"{ours}.body.0.body.0.\g<leaf>"),
        (rf"{official}\.0\.body\.1\.bn\.(?P<leaf>.+)", rf"{ours}.body.0.body.1.bn.\g<leaf>"),
        *((rf"{official}\.0\.body\.2\.{i}\.(?P<leaf>.+)", rf"{ours}.body.0.body.{i + 2}.\g<leaf>")
          for i in range(3)),
        (rf"{official}\.1\.(?P<leaf>.+)", rf"{ours}.body.1.\g<leaf>"),
    )


# a ConvBlock's channel MLP (conv1/bn1, conv2/bn2) and a transformer block's token MLP
CONV_MLP_RENAME = (
    (r"conv(?P<n>[12])\.(?P<leaf>.+)", r"conv\g<n>.conv.\g<leaf>"),
    (r"bn(?P<n>[12])\.(?P<leaf>.+)", r"conv\g<n>.bn.\g<leaf>"),
)
TOKEN_MLP_RENAME = (
    (r"mlp\.fc(?P<n>[12])_conv\.(?P<leaf>.+)", r"mlp.fc\g<n>.linear.\g<leaf>"),
    (r"mlp\.fc(?P<n>[12])_bn\.(?P<leaf>.+)", r"mlp.fc\g<n>.bn.\g<leaf>"),
)
# inside a ConvBlock (SepConv, then the channel MLP)
_CONV_BLOCK_RENAME = (
    (r"Conv\.pwconv1\.(?P<leaf>.+)", r"sep_conv.pw1.conv.\g<leaf>"),
    (r"Conv\.bn1\.(?P<leaf>.+)", r"sep_conv.pw1.bn.\g<leaf>"),
    (r"Conv\.dwconv\.(?P<leaf>.+)", r"sep_conv.dw_pw2.body.0.\g<leaf>"),
    (r"Conv\.pwconv2\.(?P<leaf>.+)", r"sep_conv.dw_pw2.body.1.\g<leaf>"),
    (r"Conv\.bn2\.(?P<leaf>.+)", r"sep_conv.dw_pw2.body.2.\g<leaf>"),
    *CONV_MLP_RENAME,
)
# inside a transformer block (RepConv Q/K/V/proj attention, conv MLP)
_TRANSFORMER_BLOCK_RENAME = (
    *(rule for x in ("q", "k", "v", "proj") for rule in _repconv_rules(rf"attn\.{x}_conv", f"attn.{x}")),
    *TOKEN_MLP_RENAME,
)


def _nested(prefixes: Sequence[tuple[str, str]],
            inner: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((rf"{outer}\.{pattern}", f"{target}.{replacement}")
                 for outer, target in prefixes for pattern, replacement in inner)


_V2_DRIVE = "https://drive.google.com/drive/folders/12JcIRG8BF6JcgPsXIetSS14udtHXeSSx"
# BICLab/Spike-Driven-Transformer-V2 classification/models.py: downsample1_1, ConvBlock1_1,
# downsample1_2, ConvBlock1_2, downsample2, ConvBlock2_1, ConvBlock2_2, downsample3, block3,
# downsample4, block4, head (+ head_kd with --kd).
META_SPIKEFORMER_LAYOUT = OfficialLayout(
    family="Meta-SpikeFormer (SDT v2)", repo="BICLab/Spike-Driven-Transformer-V2",
    rename=(
        *((rf"{name}\.encode_(conv|bn)\.(.+)", rf"{stage}.conv.\1.\2") for name, stage in (
            ("downsample1_1", "stage1.0"), ("downsample1_2", "stage1.2"),
            ("downsample2", "stage2.0"), ("downsample3", "stage3.0"), ("downsample4", "stage4.0"))),
        *_nested([(r"ConvBlock1_1\.0", "stage1.1"), (r"ConvBlock1_2\.0", "stage1.3"),
                  (r"ConvBlock2_1\.0", "stage2.1"), (r"ConvBlock2_2\.0", "stage2.2")],
                 _CONV_BLOCK_RENAME),
        *_nested([(r"block3\.(?P<i>\d+)", r"stage3.1.blocks.\g<i>"),
                  (r"block4\.(?P<i>\d+)", r"stage4.1.blocks.\g<i>")], _TRANSFORMER_BLOCK_RENAME),
        (r"head\.(weight|bias)", r"head.fc.\1"),
    ),
    checkpoints={
        "sdt_v2_55m": PublishedCheckpoint(_V2_DRIVE, "imagenet", 80.0,
                                          "55M, T=4, trained with --kd; the folder also holds "
                                          "the training logs"),
    },
    prepare=_fold_distillation_head,
)


class MetaSpikeFormer(TokenTransformer):
    """Meta-SpikeFormer (SDT v2) for static images or pre-encoded input.

    ``x [B, C, H, W]`` (direct encoding: repeated T times) or ``[T, B, C, H, W]`` -> logits
    ``[B, classes]`` (mean over T of the per-step logits), or ``[T, B, classes]`` with
    ``per_step_logits=True``. See the module docstring for the size keys. ``attn`` names the
    token attention of both transformer stages in :data:`stlib.layers.ATTENTIONS`
    (``"sdsa_3"``; ``attn_kwargs`` for a plugged-in attention's extras). ``head_lif=False``
    gives the official code's main head, which reads the real-valued mean (see the module
    docstring). Official checkpoints load by :data:`META_SPIKEFORMER_LAYOUT`.
    """

    official_layout = META_SPIKEFORMER_LAYOUT

    def __init__(self, *, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 384, depth: int = 8, num_heads: int = 8,
                 last_dim: int | None = None, mlp_ratio: float = 4.0, T: int = 4,
                 strides: Sequence[int] = (2, 2, 2, 2, 1),
                 attn: str = "sdsa_3", attn_scale: float = 0.125, attn_v_threshold: float = 0.5,
                 attn_kwargs: dict[str, Any] | None = None, head_lif: bool = True,
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        neuron = self.setup(T=T, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                            embed_dim=embed_dim, neuron=neuron)
        if len(strides) != 5:
            raise ValueError(f"strides needs 5 values (DS1_1, DS1_2, DS2, DS3, DS4), "
                             f"got {strides!r}")
        # images too small for the strides keep the last ones (quick preset: 8 -> 2)
        strides = self.strides = fit_strides(img_size, strides)
        if img_size % math.prod(strides):
            raise ValueError(f"image size {img_size} is not divisible by the total stride "
                             f"{math.prod(strides)} (strides={list(strides)})")
        if depth < 1:
            raise ValueError(f"depth (transformer blocks in all) must be >= 1, got {depth}")
        c0, c1, c2 = embed_dim // 4, embed_dim // 2, embed_dim
        c3 = last_dim if last_dim is not None else embed_dim * 5 // 4
        self.widths = (c0, c1, c2, c3)

        def transformers(depth: int, dim: int) -> TokenStage:
            return TokenStage(self.build_token_blocks(
                depth, dim, num_heads=num_heads, mlp_ratio=mlp_ratio, neuron=neuron, attn=attn,
                attn_kwargs=attn_kwargs, attn_scale=attn_scale, attn_v_threshold=attn_v_threshold))

        def conv_block(dim: int) -> ConvBlock:
            return ConvBlock(dim, neuron=neuron, mlp_ratio=mlp_ratio, sep_conv=self.sep_conv)

        s = strides
        self.stage1 = nn.Sequential(
            Downsample(in_chans, c0 // 2, kernel_size=7, stride=s[0], neuron=None),
            conv_block(c0 // 2),
            Downsample(c0 // 2, c0, kernel_size=3, stride=s[1], neuron=neuron),
            conv_block(c0),
        )
        self.stage2 = nn.Sequential(
            Downsample(c0, c1, kernel_size=3, stride=s[2], neuron=neuron),
            *(conv_block(c1) for _ in range(2)),
        )
        self.stage3 = nn.Sequential(
            Downsample(c1, c2, kernel_size=3, stride=s[3], neuron=neuron),
            transformers(depth - depth // 4, c2),
        )
        self.stage4 = nn.Sequential(
            Downsample(c2, c3, kernel_size=3, stride=s[4], neuron=neuron),
            transformers(depth // 4, c3),
        )
        self.head = SpikingTokenHead(c3, num_classes,
                                     neuron=self.head_neuron(neuron) if head_lif else None,
                                     per_step=per_step_logits, spatial=True)
        self.head.apply(_init_weights)  # trunc_normal(0.02) on the head; convs keep torch's init

    #: the conv blocks' separable conv (E-SpikeFormer: :class:`SpikingSepConv`)
    sep_conv: type[nn.Module] = SepConv

    def build_token_blocks(self, depth: int, dim: int, **block_args) -> nn.ModuleList:
        """The blocks of one transformer stage (E-SpikeFormer adds a conv mixer)."""
        return build_blocks(depth, dim, mlp_layer=PreActMLP, **block_args)

    def head_neuron(self, neuron: NeuronFactory) -> NeuronFactory:
        """The neuron before the classifier (E-SpikeFormer's counts spikes, ``norm=1``)."""
        return neuron

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_sequence(x)  # [T, B, C, H, W]
        x = self.stage2(self.stage1(x))  # [T, B, c1, H/8, W/8] on ImageNet
        return self.stage4(self.stage3(x))  # [T, B, c3, H/16, W/16]

    def cam_target_layer(self) -> nn.Module:
        """Grad-CAM's default target: the last stage (output ``[T, B, c3, H', W']``)."""
        return self.stage4


def _create_sdt_v2(**kwargs) -> MetaSpikeFormer:
    return MetaSpikeFormer(**kwargs)


@register_model
def sdt_v2_15m(**overrides) -> MetaSpikeFormer:
    """Meta-SpikeFormer 15.1M, ImageNet (widths 64/128/256/360): 15,112,208 parameters."""
    arch = dict(embed_dim=256, last_dim=360, depth=8, num_heads=8)
    return _create_sdt_v2(**{**arch, **overrides})


@register_model
def sdt_v2_31m(**overrides) -> MetaSpikeFormer:
    """Meta-SpikeFormer 31.3M (official ``metaspikformer_8_384``), ImageNet (widths
    96/192/384/480): 31,333,864 parameters."""
    arch = dict(embed_dim=384, last_dim=480, depth=8, num_heads=8)
    return _create_sdt_v2(**{**arch, **overrides})


@register_model
def sdt_v2_55m(**overrides) -> MetaSpikeFormer:
    """Meta-SpikeFormer 55.4M (official ``metaspikformer_8_512``), ImageNet (widths
    128/256/512/640): 55,350,248 parameters."""
    arch = dict(embed_dim=512, last_dim=640, depth=8, num_heads=8)
    return _create_sdt_v2(**{**arch, **overrides})


@register_model
def sdt_v2_15m_cifar(**overrides) -> MetaSpikeFormer:
    """Meta-SpikeFormer 15M widths on CIFAR (no official config): strides (1, 1, 2, 2, 1),
    32 -> 8 (64 tokens), 10 classes."""
    arch = dict(embed_dim=256, last_dim=360, depth=8, num_heads=8, img_size=32, num_classes=10,
                strides=(1, 1, 2, 2, 1))
    return _create_sdt_v2(**{**arch, **overrides})
