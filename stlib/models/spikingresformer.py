"""SpikingResformer (Shi, Hao, Yu, CVPR 2024).

Paper: https://arxiv.org/abs/2403.14302 ; official code xyshi2000/SpikingResformer
(re-implemented from the facts in shared/reference/MODELS-2.md, section 3).

A hierarchical, ResNet-like spiking transformer; Ti* (CIFAR), top to bottom::

    image -> (repeat T) -> prologue Conv3x3-BN (no neuron)
          -> stage 1: [DSSA(p=4) + GWFFN] x 1            (64 ch, 32x32)
          -> SN-Conv3x3/2-BN -> stage 2: [DSSA(p=2) + GWFFN] x 2   (192 ch, 16x16)
          -> SN-Conv3x3/2-BN -> stage 3: [DSSA(p=1) + GWFFN] x 3   (384 ch, 8x8)
          -> global average pool -> Linear (no bias) per step -> mean over T

Every residual is real-valued (membrane shortcut) and sits inside DSSA / GWFFN.

**DSSA** (Dual Spike Self-Attention), ``s = SN(x)``, ``y = BN(Conv_{p x p, stride p}(s))``
split per head into ``y1, y2`` (``[T, B, h, d, L]``, L = HW / p^2)::

    A = SN( y1^T s / sqrt(r_x d) ),   O = y2 A / sqrt(r_A L),   out = x + BN(Conv1x1(SN(O)))

``r_x``, ``r_A`` are per-head firing rates of s and A, tracked during training as EMAs
(momentum 0.999, started from the first batch) and frozen in eval. Quirk: a head that has
never fired would give an infinite scale in the official code; here rates are floored at
``1e-4``.

**GWFFN**: ``u = BN(W_up SN(x))``; ``v = u + BN(GroupConv3x3(SN(u)))`` (groups of 64
channels); ``out = x + BN(W_down SN(v))``.

Size keys (hierarchical): ``embed_dim`` is the last stage's width, the stages have widths
``(D/6, D/2, D)``; ``num_heads`` is the last stage's heads, the stages have
``(max(1, h/6), max(1, h/2), h)``; ``depth`` is the number of (DSSA, GWFFN) pairs in the last
stage, the stages have ``(ceil(depth/3), ceil(2 depth/3), depth)``. Ti*: D=384, h=6, depth=3.
The paper's neuron is LIF (tau 2) with the ATan surrogate (alpha 2): the default when
``neuron`` is None. All convs and the classifier are bias-free.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from ..layers.input_check import to_time_major
from ..layers.multistep import ConvBN, SeqToBatch
from ..registry import UnknownNameError
from ._registry import register_model
from .official_weights import OfficialLayout, PublishedCheckpoint

NeuronFactory = Callable[..., nn.Module]


def resformer_neuron(T: int) -> NeuronFactory:
    """The paper's neuron: spikingjelly LIF, tau 2, detach_reset, ATan surrogate (alpha 2)."""
    from ..neurons import neuron_factory

    return neuron_factory("LIF", T=T, detach_reset=True, surrogate="atan", alpha=2.0)


class DSSA(nn.Module):
    """Dual Spike Self-Attention with its residual. ``x [T, B, C, H, W] -> [T, B, C, H, W]``."""

    def __init__(self, dim: int, *, num_heads: int, patch_size: int, neuron: NeuronFactory,
                 momentum: float = 0.999, min_rate: float = 1e-4):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"stage width {dim} is not divisible by its {num_heads} heads")
        self.num_heads, self.patch_size = num_heads, patch_size
        self.momentum, self.min_rate = momentum, min_rate
        self.in_neuron = neuron()
        self.w = ConvBN(dim, 2 * dim, kernel_size=patch_size, stride=patch_size, padding=0)
        self.attn_neuron = neuron()
        self.out_neuron = neuron()
        self.proj = ConvBN(dim, dim, kernel_size=1)
        self.register_buffer("rate_x", torch.zeros(1, 1, num_heads, 1, 1))
        self.register_buffer("rate_attn", torch.zeros(1, 1, num_heads, 1, 1))

    def _track(self, rate: torch.Tensor, spikes: torch.Tensor) -> torch.Tensor:
        """EMA of the per-head firing rate of ``spikes [T, B, h, ., .]`` (training only)."""
        if self.training:
            now = spikes.detach().mean((0, 1, 3, 4), keepdim=True)
            rate.copy_(now if torch.all(rate == 0) else rate * self.momentum + now * (1 - self.momentum))
        return rate.clamp(min=self.min_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, C, H, W = x.shape
        h, d = self.num_heads, C // self.num_heads
        s = self.in_neuron(x)
        y = self.w(s).reshape(T, B, h, 2 * d, -1)  # [T, B, h, 2d, L], real-valued
        y1, y2 = y[:, :, :, :d], y[:, :, :, d:]
        s = s.reshape(T, B, h, d, H * W)
        r_x = self._track(self.rate_x, s)
        attn = self.attn_neuron((y1.transpose(-1, -2) @ s) / torch.sqrt(r_x * d))  # [T, B, h, L, HW]
        r_a = self._track(self.rate_attn, attn)
        out = (y2 @ attn) / torch.sqrt(r_a * y.shape[-1])  # [T, B, h, d, HW]
        out = self.out_neuron(out.reshape(T, B, C, H, W))
        return x + self.proj(out)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, patch_size={self.patch_size}, momentum={self.momentum}"


class GWFFN(nn.Module):
    """Group-Wise Feed-Forward Network with its residuals. ``x [T, B, C, H, W] -> same``."""

    def __init__(self, dim: int, *, neuron: NeuronFactory, ratio: int = 4, group_size: int = 64):
        super().__init__()
        hidden = dim * ratio
        groups = max(1, hidden // group_size)
        if hidden % groups:
            raise ValueError(f"GWFFN hidden width {hidden} is not divisible into {groups} groups")
        self.up_neuron = neuron()
        self.up = ConvBN(dim, hidden, kernel_size=1)
        self.conv_neuron = neuron()
        self.conv = SeqToBatch(nn.Conv2d(hidden, hidden, 3, 1, 1, groups=groups, bias=False),
                               nn.BatchNorm2d(hidden))
        self.down_neuron = neuron()
        self.down = ConvBN(hidden, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.up(self.up_neuron(x))
        u = u + self.conv(self.conv_neuron(u))
        return x + self.down(self.down_neuron(u))


class Downsample(nn.Module):
    """``BN(Conv3x3_stride2(SN(x)))``, ``[T, B, C_in, H, W] -> [T, B, C_out, H/2, W/2]``."""

    def __init__(self, in_chans: int, out_chans: int, *, neuron: NeuronFactory):
        super().__init__()
        self.neuron = neuron()
        self.conv = ConvBN(in_chans, out_chans, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.neuron(x))


_L = r"layers\.(\d)\.(\d+)\."
_S = r"stages.\1.\2."
# xyshi2000/SpikingResformer models/spikingresformer.py: prologue (conv, BN[, max-pool]),
# layers[stage][i] (a DownsampleLayer at i = 0 of stages 2 and 3, then DSSA / GWFFN pairs),
# classifier.
_STAGES_RENAME = (
    (r"layers\.([12])\.0\.conv\.(.+)", r"stages.\1.0.conv.conv.\2"),  # downsample
    (r"layers\.([12])\.0\.norm\.bn\.(.+)", r"stages.\1.0.conv.bn.\2"),
    (_L + r"firing_rate_x", _S + "rate_x"),  # DSSA
    (_L + r"firing_rate_attn", _S + "rate_attn"),
    (_L + r"W\.(.+)", _S + r"w.conv.\3"),
    (_L + r"norm\.bn\.(.+)", _S + r"w.bn.\3"),
    (_L + r"Wproj\.(.+)", _S + r"proj.conv.\3"),
    (_L + r"norm_proj\.bn\.(.+)", _S + r"proj.bn.\3"),
    (_L + r"(up|down)\.1\.(.+)", _S + r"\3.conv.\4"),  # GWFFN
    (_L + r"(up|down)\.2\.bn\.(.+)", _S + r"\3.bn.\4"),
    (_L + r"conv\.0\.1\.(.+)", _S + r"conv.body.0.\3"),
    (_L + r"conv\.0\.2\.bn\.(.+)", _S + r"conv.body.1.\3"),
    (r"classifier\.(.+)", r"head.\1"),
)
_REPO = "xyshi2000/SpikingResformer (models/spikingresformer.py)"
SPIKINGRESFORMER_LAYOUTS = {
    "cifar": OfficialLayout(family="SpikingResformer", repo=_REPO, rename=(
        (r"prologue\.0\.(.+)", r"prologue.conv.\1"),
        (r"prologue\.1\.bn\.(.+)", r"prologue.bn.\1"),
        *_STAGES_RENAME)),
    "imagenet": OfficialLayout(family="SpikingResformer (ImageNet)", repo=_REPO, rename=(
        (r"prologue\.0\.(.+)", r"prologue.0.conv.\1"),
        (r"prologue\.1\.bn\.(.+)", r"prologue.0.bn.\1"),
        *_STAGES_RENAME), checkpoints={
        "spikingresformer_l": PublishedCheckpoint(
            "https://drive.google.com/drive/folders/1sAFHKF9QZC2P0aSoC9bdLqgW8TfLjFSC",
            "imagenet", 79.40, "the official readme's 'pretrained checkpoints' folder (it does "
            "not list which sizes it holds); 79.40 is the paper's L at T=4")}),
}
SPIKINGRESFORMER_LAYOUT = SPIKINGRESFORMER_LAYOUTS["cifar"]


class SpikingResformer(nn.Module):
    """SpikingResformer for static images or pre-encoded input.

    ``x [B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` -> logits ``[B, classes]``
    (mean over T of per-step logits), or ``[T, B, classes]`` with ``per_step_logits=True``.

    ``prologue="cifar"``: Conv3x3-BN at full resolution; ``"imagenet"``: Conv7x7 stride 2-BN,
    then MaxPool 3/2 (224 -> 56), as the official ImageNet models. ``widths`` and ``heads``
    give the three stages' channels and heads (default: ``D/6, D/2, D`` and ``h/6, h/2, h`` of
    ``embed_dim`` and ``num_heads``, the Ti layout); stage depths are ``depth/3, 2 depth/3,
    depth`` (1, 2, 3 in every official model).
    """

    def official_layout(self) -> OfficialLayout:
        return SPIKINGRESFORMER_LAYOUTS[self.prologue_kind]

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 3, num_heads: int = 6, T: int = 4,
                 patch_sizes: Sequence[int] = (4, 2, 1), group_size: int = 64,
                 prologue: str = "cifar", widths: Sequence[int] | None = None,
                 heads: Sequence[int] | None = None,
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        if prologue not in PROLOGUES:
            raise UnknownNameError("SpikingResformer prologue", prologue, PROLOGUES)
        first = img_size // PROLOGUES[prologue]  # the first stage's resolution
        sizes = [first, first // 2, first // 4]
        if first * PROLOGUES[prologue] != img_size or first % 4 or any(
                s % p for s, p in zip(sizes, patch_sizes)):
            raise ValueError(f"SpikingResformer ({prologue} prologue) needs stage sizes {sizes} "
                             f"(the image size over {PROLOGUES[prologue]}, then halved twice) "
                             f"divisible by 4 and by the patch sizes {list(patch_sizes)}; got "
                             f"image size {img_size}")
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.embed_dim, self.per_step = num_classes, embed_dim, per_step_logits
        self.prologue_kind = prologue
        neuron = neuron or resformer_neuron(T)
        widths = list(widths or [embed_dim // 6, embed_dim // 2, embed_dim])
        heads = list(heads or [max(1, num_heads // 6), max(1, num_heads // 2), num_heads])
        depths = [math.ceil(depth / 3), math.ceil(2 * depth / 3), depth]
        self.prologue = (ConvBN(in_chans, widths[0]) if prologue == "cifar" else nn.Sequential(
            ConvBN(in_chans, widths[0], kernel_size=7, stride=2, padding=3),
            SeqToBatch(nn.MaxPool2d(3, 2, 1))))
        stages = []
        for i, (w, h, n, p) in enumerate(zip(widths, heads, depths, patch_sizes)):
            layers = [Downsample(widths[i - 1], w, neuron=neuron)] if i else []
            for _ in range(n):
                layers += [DSSA(w, num_heads=h, patch_size=p, neuron=neuron),
                           GWFFN(w, neuron=neuron, group_size=group_size)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = (nn.Linear(widths[-1], num_classes, bias=False) if num_classes > 0
                     else nn.Identity())
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = to_time_major(x, T=self.T, in_chans=self.in_chans, img_size=self.img_size,
                          model="SpikingResformer")
        return self.stages(self.prologue(x))  # [T, B, D, h, w], real-valued

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(x.flatten(3).mean(3))  # [T, B, classes]: Linear per step
        return logits if self.per_step else logits.mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def cam_target_layer(self) -> nn.Module:
        """Grad-CAM's default target: the last stage (maps ``[T, B, D, h, w]``)."""
        return self.stages[-1]


def _init_weights(module: nn.Module) -> None:
    """The official init: trunc_normal(std 0.02) on conv and linear weights; BN (1, 0)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


#: prologue -> its downsampling (CIFAR: none; ImageNet: conv stride 2, then max-pool stride 2)
PROLOGUES = {"cifar": 1, "imagenet": 4}


def _imagenet(widths: Sequence[int], heads: Sequence[int], overrides: dict) -> SpikingResformer:
    arch = dict(embed_dim=widths[-1], num_heads=heads[-1], depth=3, widths=widths, heads=heads,
                img_size=224, num_classes=1000, prologue="imagenet")
    return SpikingResformer(**{**arch, **overrides})


@register_model
def spikingresformer_ti(**overrides) -> SpikingResformer:
    """SpikingResformer-Ti, ImageNet (widths 64/192/384, heads 1/3/6): 11,180,992 parameters."""
    return _imagenet((64, 192, 384), (1, 3, 6), overrides)


@register_model
def spikingresformer_s(**overrides) -> SpikingResformer:
    """SpikingResformer-S, ImageNet (64/256/512, heads 1/4/8): 17,813,824 parameters."""
    return _imagenet((64, 256, 512), (1, 4, 8), overrides)


@register_model
def spikingresformer_m(**overrides) -> SpikingResformer:
    """SpikingResformer-M, ImageNet (64/384/768, heads 1/6/12): 35,601,472 parameters."""
    return _imagenet((64, 384, 768), (1, 6, 12), overrides)


@register_model
def spikingresformer_l(**overrides) -> SpikingResformer:
    """SpikingResformer-L, ImageNet (128/512/1024, heads 2/8/16): 60,375,680 parameters."""
    return _imagenet((128, 512, 1024), (2, 8, 16), overrides)


@register_model
def spikingresformer_ti_cifar(**overrides) -> SpikingResformer:
    """SpikingResformer-Ti* (CIFAR): widths (64, 192, 384), heads (1, 3, 6), depths (1, 2, 3),
    10,793,152 parameters at 10 classes."""
    arch = dict(embed_dim=384, num_heads=6, depth=3)
    return SpikingResformer(**{**arch, **overrides})
