"""Spiking Wavelet Transformer, SWformer (Fang et al., ECCV 2024).

Paper: https://arxiv.org/abs/2403.11138 ; official code bic-L/Spiking-Wavelet-Transformer
(re-implemented from the facts in shared/reference/MODELS-2.md, section 2).

Top to bottom (CIFAR, SWformer-4-384)::

    image -> (repeat T) -> MS-SPS (Spike-driven Transformer tokenizer, real-valued output)
          -> L x [ x += FATM(x) ; x += MLP(x) ]  (membrane shortcut: real-valued stream)
          -> mean over tokens -> Linear -> mean over T -> logits

The official repository has three model files, one per data kind, and each is a config here:

* CIFAR (``cifar10-100/model.py``): the picture above, ``swformer_4_384``.
* ImageNet (``imagenet/model/spikingwavelet.py``, ``swformer_6_512`` / ``swformer_8_512``):
  the same blocks, pooling "1111" on 256x256 input (16x16 tokens, a power of two; 224 would
  give 14x14), 2 wavelet groups, and SDT's spiking head ``Linear(SN(mean_N(x)))``
  (``head="spiking"``). Its released checkpoints were trained with the Haar threshold 1.0
  or 0.5 (``haar_threshold``; the negative threshold stays 0.5).
* Event data (``event/model.py``, ``swformer_dvs_2_256``): ``event_mixer=True``. The spikes
  are dilated by SDT's DVS "Erode" (3x3 max) before the transform, the inverse transform's
  output is dilated too, and the two conv paths read that wavelet output instead of the
  spikes: ``FATM(x) = conv1(w) + conv2(w)``, ``w = max3x3(wavelet(max3x3(SN(x))))``.

FATM, the Frequency-Aware Token Mixer (no attention), on ``s = SN(x)`` (maps ``[T,B,C,H,W]``):

* wavelet path: ``Z = H NegIF(s H^T)`` (spiking 2-D Haar), ``A = SN(BN(Z))``, a learnable
  per-group channel mixing ``A[g] W_g`` (``W [G, C/G, C/G]``, init ``0.02 randn``), BN,
  inverse ``H^T NegIF(NegIF(.) H)``, BN;
* two conv paths on s with weights shared by the G channel groups: Conv1x1-BN and Conv3x3-BN;
* ``FATM(x) = wavelet + conv1 + conv2`` (event data: see above).

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
from ..layers.grid import fit_pools, grid_to_tokens, max3x3, tokens_to_grid
from ..layers.multistep import seq_to_batch
from ..layers.spike_driven import MSSPS, PreActMLP, SpikingTokenHead
from ..layers.wavelet import HaarDWT2d, HaarIDWT2d
from ._registry import register_model
from .official_weights import OfficialLayout, PublishedCheckpoint
from .spikformer import BLOCK_RENAME, SPS_RENAME, TokenTransformer, _init_weights, default_neuron

NeuronFactory = Callable[..., nn.Module]


def _surrogate_settings(neuron: NeuronFactory) -> dict:
    """The configured surrogate and alpha (for the ternary neurons), if the factory has them."""
    settings = getattr(neuron, "settings", {}) or {}
    return {k: settings[k] for k in ("surrogate", "alpha") if k in settings}


class FATM(nn.Module):
    """Frequency-Aware Token Mixer. ``x [T, B, N, D] -> [T, B, N, D]`` (real-valued branch).

    ``haar_threshold`` is the positive threshold of the Haar NegIF neurons; ``event=True`` is
    the official event-data mixer (module docstring).
    """

    def __init__(self, dim: int, *, groups: int, neuron: NeuronFactory, haar_threshold: float = 1.0,
                 event: bool = False):
        super().__init__()
        if dim % groups:
            raise ValueError(f"embed dim {dim} is not divisible by the {groups} wavelet groups")
        self.groups, self.group_size, self.event = groups, dim // groups, event
        bs = self.group_size
        ternary = _surrogate_settings(neuron)
        self.x_neuron = neuron()
        self.dwt = HaarDWT2d(haar_threshold, **ternary)
        self.dwt_bn = nn.BatchNorm2d(dim)
        self.haar_neuron = neuron()
        self.haar_weight = nn.Parameter(0.02 * torch.randn(groups, bs, bs))
        self.mix_bn = nn.BatchNorm2d(dim)
        self.idwt = HaarIDWT2d(haar_threshold, **ternary)
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
        if self.event:
            s = max3x3(s)
        T, B, C, H, W = s.shape
        a = self.haar_neuron(seq_to_batch(self.dwt_bn, self.dwt(s)))
        a = a.reshape(T, B, self.groups, self.group_size, H, W)
        a = torch.einsum("tbgjhw,gjk->tbgkhw", a, self.haar_weight).reshape(T, B, C, H, W)
        wave = seq_to_batch(self.idwt_bn, self.idwt(seq_to_batch(self.mix_bn, a)))
        if self.event:  # the conv paths read the dilated wavelet output; no wavelet term
            wave = max3x3(wave)
            return grid_to_tokens(self.grouped(self.conv1, self.conv1_bn, wave)
                                  + self.grouped(self.conv2, self.conv2_bn, wave))
        out = wave + self.grouped(self.conv1, self.conv1_bn, s) + self.grouped(self.conv2, self.conv2_bn, s)
        return grid_to_tokens(out)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, group_size={self.group_size}, event={self.event}"


class SWBlock(nn.Module):
    """``x = x + FATM(x); x = x + MLP(x)`` (pre-activation MLP). ``x [T, B, N, D]``."""

    def __init__(self, dim: int, *, groups: int, mlp_ratio: float, neuron: NeuronFactory, **mixer):
        super().__init__()
        self.mixer = FATM(dim, groups=groups, neuron=neuron, **mixer)
        self.mlp = PreActMLP(dim, int(dim * mlp_ratio), neuron=neuron)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(x)
        return x + self.mlp(x)


def _mixer_rename(module: str, mix_bn: str) -> tuple[tuple[str, str], ...]:
    """FATM keys of one official model file: its block calls the mixer ``module`` and the BN
    after the per-group matrix ``mix_bn``."""
    m = rf"block\.(\d+)\.{module}\."
    return ((m + r"haar_weight", r"blocks.\1.mixer.haar_weight"),
            (m + r"haar_forward_bn\.(.+)", r"blocks.\1.mixer.dwt_bn.\2"),
            (m + mix_bn + r"\.(.+)", r"blocks.\1.mixer.mix_bn.\2"),
            (m + r"haar_inverse_bn\.(.+)", r"blocks.\1.mixer.idwt_bn.\2"),
            (m + r"(conv[12](?:_bn)?)\.(.+)", r"blocks.\1.mixer.\2.\3"))


_REPO = "bic-L/Spiking-Wavelet-Transformer"
_RELEASE = "https://github.com/bic-L/Spiking-Wavelet-Transformer/releases/tag/checkpoints"
# The official run.sh evaluates four released files, named by config, Haar threshold and top-1:
# 6-512 vth 1.0 74.95 / vth 0.5 74.98; 8-512 vth 1.0 75.43 / vth 0.5 75.19.
_RELEASED = "release file {}; the release also holds the Haar-threshold-{} file ({}, haar_threshold={})"
SWFORMER_LAYOUTS = {
    # cifar10-100/model.py and event/model.py (same keys): the SDT-style SPS, per block a FATM
    # "mixer" and the pre-activation MLP (fc1/fc2 conv + bn); the head is a plain Linear.
    "mean": OfficialLayout(
        family="SWformer", repo=f"{_REPO} (cifar10-100/model.py, event/model.py)",
        rename=SPS_RENAME + _mixer_rename("mixer", "haar_multiply_bn") + BLOCK_RENAME),
    # imagenet/model/spikingwavelet.py: the mixer is called "attn" and its middle BN "haar_bn";
    # the head neuron has no parameters.
    "spiking": OfficialLayout(
        family="SWformer (ImageNet)", repo=f"{_REPO} (imagenet/model/spikingwavelet.py)",
        rename=SPS_RENAME + _mixer_rename("attn", "haar_bn") + BLOCK_RENAME,
        checkpoints={
            "swformer_8_512": PublishedCheckpoint(_RELEASE, "imagenet", 75.43, _RELEASED.format(
                "8-512-block-2-vth-1.-bs512-75.4259.pth.tar", "0.5", "75.19", "0.5")),
            "swformer_6_512": PublishedCheckpoint(_RELEASE, "imagenet", 74.95, _RELEASED.format(
                "6-512-block-2-vth-1.0-bs512-74.9499.pth.tar", "0.5", "74.98", "0.5")),
        }),
}
SWFORMER_LAYOUT = SWFORMER_LAYOUTS["mean"]


HEADS = ("mean", "spiking")


class SWformer(TokenTransformer):
    """Spiking Wavelet Transformer for static images, event frames or pre-encoded input.

    ``x [B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` -> logits ``[B, classes]``
    (mean over T), or ``[T, B, classes]`` with ``per_step_logits=True``.

    ``head="mean"``: ``Linear(mean_N(x))`` (CIFAR and event files); ``"spiking"``: SDT's
    ``Linear(SN(mean_N(x)))`` (the ImageNet file). The head also picks the official layout a
    checkpoint loads by (:data:`SWFORMER_LAYOUTS`), since it is what tells the files apart.
    ``event_mixer=True``: the event file's FATM; ``haar_threshold``: the Haar NegIF threshold.
    """

    def official_layout(self) -> OfficialLayout:
        return SWFORMER_LAYOUTS[self.head_kind]

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 4, num_heads: int = 12, mlp_ratio: float = 4.0,
                 T: int = 4, wavelet_groups: int = 4, haar_threshold: float = 1.0,
                 event_mixer: bool = False, head: str = "mean",
                 pool_stages: Sequence[bool] = (False, False, True, True),
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        if head not in HEADS:
            raise ValueError(f"unknown SWformer head {head!r}; valid: {', '.join(HEADS)}")
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.embed_dim, self.num_heads = num_classes, embed_dim, num_heads
        self.head_kind = head
        neuron = neuron or default_neuron(T)
        # images too small for the pooling keep its last poolings (quick preset: 8 -> 2)
        self.pool_stages = fit_pools(img_size, pool_stages)
        self.patch_embed = MSSPS(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim,
                                 pool_stages=self.pool_stages, neuron=neuron)
        grid = self.patch_embed.grid
        if grid & (grid - 1):
            raise ValueError(f"SWformer's Haar transform needs a power-of-two token grid; image "
                             f"size {img_size} gives {grid}x{grid}")
        self.blocks = nn.ModuleList(SWBlock(embed_dim, groups=wavelet_groups, mlp_ratio=mlp_ratio,
                                            neuron=neuron, haar_threshold=haar_threshold,
                                            event=event_mixer) for _ in range(depth))
        if head == "spiking":
            self.head = SpikingTokenHead(embed_dim, num_classes, neuron=neuron, per_step=per_step_logits)
        else:
            self.head = MeanTokenHead(embed_dim, num_classes, per_step=per_step_logits)
        self.head.apply(_init_weights)  # official (CIFAR): trunc_normal(0.02) on nn.Linear only


@register_model
def swformer_4_384(**overrides) -> SWformer:
    """SWformer-4-384, CIFAR (4 wavelet groups of 96 channels): 7,479,226 parameters at 10 classes."""
    arch = dict(depth=4, embed_dim=384, wavelet_groups=4)
    return SWformer(**{**arch, **overrides})


def _imagenet_swformer(depth: int, overrides: dict) -> SWformer:
    arch = dict(depth=depth, embed_dim=512, wavelet_groups=2, img_size=256, num_classes=1000,
                pool_stages=(True, True, True, True), head="spiking")
    return SWformer(**{**arch, **overrides})


@register_model
def swformer_6_512(**overrides) -> SWformer:
    """SWformer-6-512, ImageNet (256 -> 16x16 tokens, 2 wavelet groups of 256, spiking head):
    21,806,632 parameters at 1000 classes; released checkpoint 74.95 % (Haar threshold 1.0)."""
    return _imagenet_swformer(6, overrides)


@register_model
def swformer_8_512(**overrides) -> SWformer:
    """SWformer-8-512, ImageNet (256 -> 16x16 tokens, 2 wavelet groups of 256, spiking head):
    27,600,424 parameters at 1000 classes; released checkpoint 75.43 % (Haar threshold 1.0)."""
    return _imagenet_swformer(8, overrides)


@register_model
def swformer_dvs_2_256(**overrides) -> SWformer:
    """SWformer-2-256 for event frames (128x128, 2 polarities, pooling "1111" -> 8x8 tokens, 4
    wavelet groups, the event mixer, T=16): 2,157,834 parameters at 10 classes. The official
    event/train.py builds depth 2 and 4 groups; its yaml leaves ``--dim`` unset, so 256 is
    this lab's choice (the width of the other DVS models here)."""
    arch = dict(depth=2, embed_dim=256, wavelet_groups=4, img_size=128, in_chans=2, T=16,
                pool_stages=(True, True, True, True), event_mixer=True)
    return SWformer(**{**arch, **overrides})
