"""SGLFormer: Spiking Global-Local-Fusion Transformer (Zhang et al., Front. Neurosci. 2024).

Paper: https://doi.org/10.3389/fnins.2024.1371290 ; official code ZhangHanN1/SGLFormer
(re-implemented from the facts in shared/reference/MODELS-2.md, section 1).

Figure of the paper, top to bottom (CIFAR, SGLFormer-4-384)::

    image -> (repeat T) -> stem Conv-BN-SN (D/6) -> tokenizer 4 x Conv-BN-[MaxPool]-SN
          -> L x super-block [ Loc ; LocalSSA + MLP ; GlobalSSA + MLP ; GlobalSSA + MLP ]
          -> head: depthwise Conv over (tokens x T) -> BN -> Linear -> logits

* ``Loc(u) = u1 + PW(DW(PW(u1)))`` with ``u1 = u + DW(u)`` (all Conv-BN-SN, 4x hidden width),
  and the block adds ``x + Loc(x)``, so x is counted twice, as in the official code.
* LocalSSA is Spikformer's SSA inside 4 windows made by :func:`partition`: each window is
  the *strided* grid of pixels sharing ``(h mod 2, w mod 2)``, not a contiguous patch.
* GlobalSSA is SSA over all tokens. Every 1x1 conv is bias-free, the attention neuron fires
  at 0.5, the scale 0.125 is applied after ``Q K^T V``.

Size keys: ``embed_dim`` is D, ``num_heads`` the heads of every SSA, ``depth`` the number of
super-blocks (the official ``layer``; SGLFormer-4-384 has ``depth=1``: the "4" counts the
Loc block and the three SSA+MLP pairs inside it).
Head: the official head is a learned weighted sum over tokens *and time* (its kernel is
``(N, T)``), so there are no per-step logits: ``per_step_logits=True`` is refused.
The official ``drop_path_rate=0.2`` is passed but never used; it is not built here.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..layers.bias_free import BiasFreeMLP, BiasFreeSSA
from ..layers.grid import grid_to_tokens, tokens_to_grid
from ..layers.multistep import ConvBN, SeqToBatch
from ..layers.speds import ConvBNPoolSN
from ._registry import register_model
from .official_weights import OfficialLayout, PublishedCheckpoint
from .spikformer import TokenTransformer, default_neuron

NeuronFactory = Callable[..., nn.Module]


def partition(x: torch.Tensor, n: int) -> torch.Tensor:
    """``[T, B, C, H, W] -> [T, B*n*n, C, H/n, W/n]``: window ``(b_h, b_w)`` holds pixels
    ``(a*n + b_h, c*n + b_w)`` (a dilated grid, as the official ``Partition``)."""
    T, B, C, H, W = x.shape
    x = x.reshape(T, B, C, H // n, n, W // n, n).permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(T, B * n * n, C, H // n, W // n)


def integrate(x: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of :func:`partition`: ``[T, B*n*n, C, h, w] -> [T, B, C, h*n, w*n]``."""
    T, Bnn, C, h, w = x.shape
    x = x.reshape(T, Bnn // (n * n), n, n, C, h, w).permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(T, Bnn // (n * n), C, h * n, w * n)


class DWConvBNSN(nn.Module):
    """``SN(BN(DepthwiseConv3x3(x)))``, ``x [T, B, C, H, W] -> [T, B, C, H, W]`` (spikes)."""

    def __init__(self, dim: int, *, neuron: NeuronFactory):
        super().__init__()
        self.conv = SeqToBatch(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False), nn.BatchNorm2d(dim))
        self.neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(self.conv(x))


class PWConvBNSN(nn.Module):
    """``SN(BN(Conv1x1(x)))`` without bias, ``[T, B, C_in, H, W] -> [T, B, C_out, H, W]``."""

    def __init__(self, in_chans: int, out_chans: int, *, neuron: NeuronFactory):
        super().__init__()
        self.conv = ConvBN(in_chans, out_chans, kernel_size=1)
        self.neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(self.conv(x))


class LocalBlock(nn.Module):
    """SGLFormer's Loc: ``u1 = x + DW(x)``; returns ``u1 + PW2(DW2(PW1(u1)))``.

    ``x [T, B, N, D] -> [T, B, N, D]`` (the conv runs on the ``sqrt(N) x sqrt(N)`` grid).
    """

    def __init__(self, dim: int, *, neuron: NeuronFactory, expansion: int = 4):
        super().__init__()
        self.dw = DWConvBNSN(dim, neuron=neuron)
        self.ffn = nn.Sequential(PWConvBNSN(dim, expansion * dim, neuron=neuron),
                                 DWConvBNSN(expansion * dim, neuron=neuron),
                                 PWConvBNSN(expansion * dim, dim, neuron=neuron))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = tokens_to_grid(x)  # [T, B, D, H, W]
        u = u + self.dw(u)
        return grid_to_tokens(u + self.ffn(u))


class LocalSSA(nn.Module):
    """SSA inside ``num_windows**2`` strided windows: ``integrate(SSA(partition(x)))``.

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes).
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, num_windows: int = 2,
                 scale: float = 0.125, attn_v_threshold: float = 0.5):
        super().__init__()
        self.num_windows = num_windows
        self.attn = BiasFreeSSA(dim, num_heads=num_heads, neuron=neuron, scale=scale,
                                attn_v_threshold=attn_v_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        windows = grid_to_tokens(partition(tokens_to_grid(x), self.num_windows))  # [T, B*n*n, N', D]
        y = self.attn(windows)
        return grid_to_tokens(integrate(tokens_to_grid(y), self.num_windows))


class SGLTokenizer(nn.Module):
    """Stem ``Conv3x3-BN-SN`` (D/6) and four ``Conv3x3-BN-[MaxPool]-SN`` (D/4, D/2, D, D; the
    last two pooled, before the neuron). ``x [T, B, C, H, W] -> tokens [T, B, HW/16, D]``."""

    def __init__(self, in_chans: int, embed_dim: int, *, neuron: NeuronFactory):
        super().__init__()
        D = embed_dim
        widths = [D // 6, D // 4, D // 2, D, D]
        pools = [False, False, False, True, True]
        self.convs = nn.Sequential(*(ConvBNPoolSN(i, o, pool=p, neuron=neuron)
                                     for i, o, p in zip([in_chans, *widths[:-1]], widths, pools)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grid_to_tokens(self.convs(x))


class SGLBlock(nn.Module):
    """One super-block: ``x += Loc(x)``, then ``x += SSA_i(x); x += MLP_i(x)`` for the local
    and the two global SSAs. Residuals add spikes (integer-valued stream).

    ``x [T, B, N, D] -> [T, B, N, D]``.
    """

    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: float, neuron: NeuronFactory,
                 num_windows: int, scale: float, attn_v_threshold: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        attn = dict(num_heads=num_heads, neuron=neuron, scale=scale, attn_v_threshold=attn_v_threshold)
        self.loc = LocalBlock(dim, neuron=neuron)
        self.attns = nn.ModuleList([LocalSSA(dim, num_windows=num_windows, **attn),
                                    BiasFreeSSA(dim, **attn), BiasFreeSSA(dim, **attn)])
        self.mlps = nn.ModuleList(BiasFreeMLP(dim, hidden, neuron=neuron) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.loc(x)
        for attn, mlp in zip(self.attns, self.mlps):
            x = x + attn(x)
            x = x + mlp(x)
        return x


class SpaceTimeConvHead(nn.Module):
    """SGLFormer's head: a depthwise conv whose kernel covers all N tokens and all T steps
    (a learned weighted sum per channel), BN, then Linear.

    ``x [T, B, N, D] -> logits [B, classes]``.
    """

    def __init__(self, dim: int, num_classes: int, *, num_tokens: int, T: int):
        super().__init__()
        self.mix = nn.Conv2d(dim, dim, kernel_size=(num_tokens, T), groups=dim)
        self.bn = nn.BatchNorm2d(dim)
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.mix(x.permute(1, 3, 2, 0)))  # [B, D, N, T] -> [B, D, 1, 1]
        return self.fc(x.flatten(1))


# SSA i of a block (ssa1 is the local one, wrapped by LocalSSA) and MLP i
_SSA_TARGETS = {1: "attns.0.attn", 2: "attns.1", 3: "attns.2"}
_ATTENTION_RULES = tuple(rule for i, target in _SSA_TARGETS.items() for rule in (
    (rf"blocks\.(\d+)\.ssa{i}\.(q|k|v|proj)_conv\.conv1x1\.(.+)", rf"blocks.\1.{target}.\2.linear.\3"),
    (rf"blocks\.(\d+)\.ssa{i}\.(q|k|v|proj)_conv\.bn\.(.+)", rf"blocks.\1.{target}.\2.bn.\3"),
    (rf"blocks\.(\d+)\.mlp{i}\.mlp([12])\.conv1x1\.(.+)", rf"blocks.\1.mlps.{i - 1}.fc\2.linear.\3"),
    (rf"blocks\.(\d+)\.mlp{i}\.mlp([12])\.bn\.(.+)", rf"blocks.\1.mlps.{i - 1}.fc\2.bn.\3"),
))
# ZhangHanN1/SGLFormer cifar10/sglformer.py (cifar100/ is byte-identical): stem, tokenizer,
# blocks.i = {loc, ssa1 (local), mlp1, ssa2, mlp2, ssa3, mlp3}, full_size_conv + bn + head.
SGLFORMER_LAYOUT = OfficialLayout(
    family="SGLFormer", repo="ZhangHanN1/SGLFormer (cifar10/sglformer.py)",
    rename=(
        (r"stem\.conv\.conv3x3\.(.+)", r"patch_embed.convs.0.conv.conv.\1"),
        (r"stem\.conv\.bn\.(.+)", r"patch_embed.convs.0.conv.bn.\1"),
        (r"tokenizer\.conv([1-4])\.conv3x3\.(.+)", r"patch_embed.convs.\1.conv.conv.\2"),
        (r"tokenizer\.conv([1-4])\.bn\.(.+)", r"patch_embed.convs.\1.conv.bn.\2"),
        (r"blocks\.(\d+)\.loc\.conv\.conv3x3\.(.+)", r"blocks.\1.loc.dw.conv.body.0.\2"),
        (r"blocks\.(\d+)\.loc\.conv\.bn\.(.+)", r"blocks.\1.loc.dw.conv.body.1.\2"),
        (r"blocks\.(\d+)\.loc\.conv1x1_1\.conv1x1\.(.+)", r"blocks.\1.loc.ffn.0.conv.conv.\2"),
        (r"blocks\.(\d+)\.loc\.conv1x1_1\.bn\.(.+)", r"blocks.\1.loc.ffn.0.conv.bn.\2"),
        (r"blocks\.(\d+)\.loc\.dwconv3x3\.conv3x3\.(.+)", r"blocks.\1.loc.ffn.1.conv.body.0.\2"),
        (r"blocks\.(\d+)\.loc\.dwconv3x3\.bn\.(.+)", r"blocks.\1.loc.ffn.1.conv.body.1.\2"),
        (r"blocks\.(\d+)\.loc\.conv1x1_2\.conv1x1\.(.+)", r"blocks.\1.loc.ffn.2.conv.conv.\2"),
        (r"blocks\.(\d+)\.loc\.conv1x1_2\.bn\.(.+)", r"blocks.\1.loc.ffn.2.conv.bn.\2"),
        *_ATTENTION_RULES,
        (r"full_size_conv\.(.+)", r"head.mix.\1"),
        (r"bn\.(.+)", r"head.bn.\1"),
        (r"head\.(weight|bias)", r"head.fc.\1"),
    ),
    checkpoints={
        "sglformer_4_384": PublishedCheckpoint(
            "https://pan.baidu.com/s/1F5vsg9V4Vaj4jbTC103m3A?pwd=thd3", "cifar100", 82.26,
            "the CIFAR-100 model (100 classes); the same folder holds the ImageNet one"),
    },
)


class SGLFormer(TokenTransformer):
    """SGLFormer for static images or pre-encoded input (official checkpoints load by
    :data:`SGLFORMER_LAYOUT`).

    ``x [B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` -> logits ``[B, classes]``.
    """

    official_layout = SGLFORMER_LAYOUT

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 1, num_heads: int = 16, mlp_ratio: float = 4.0,
                 T: int = 4, num_windows: int = 2, attn_scale: float = 0.125,
                 attn_v_threshold: float = 0.5, neuron: NeuronFactory | None = None,
                 per_step_logits: bool = False):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        if per_step_logits:
            raise ValueError("SGLFormer's head mixes the T steps (a learned (N, T) kernel): "
                             "it has no per-step logits")
        if img_size % (4 * num_windows):
            raise ValueError(f"SGLFormer needs an image size divisible by {4 * num_windows} "
                             f"(two 2x pools, then {num_windows}x{num_windows} windows), got {img_size}")
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.embed_dim = num_classes, embed_dim
        neuron = neuron or default_neuron(T)
        D = embed_dim
        self.patch_embed = SGLTokenizer(in_chans, D, neuron=neuron)
        self.num_patches = (img_size // 4) ** 2
        self.blocks = nn.ModuleList(
            SGLBlock(D, num_heads=num_heads, mlp_ratio=mlp_ratio, neuron=neuron,
                     num_windows=num_windows, scale=attn_scale, attn_v_threshold=attn_v_threshold)
            for _ in range(depth))
        self.head = SpaceTimeConvHead(D, num_classes, num_tokens=self.num_patches, T=T)
        if isinstance(self.head.fc, nn.Linear):  # official: trunc_normal on nn.Linear only (the
            nn.init.trunc_normal_(self.head.fc.weight, std=0.02)  # 1x1 convs keep the default)
            nn.init.zeros_(self.head.fc.bias)

    def cam_target_layer(self) -> nn.Module:
        """Grad-CAM's default target: the input of the last MLP (tokens ``[T, B, N, D]``)."""
        return self.blocks[-1].mlps[-1].input


@register_model
def sglformer_4_384(**overrides) -> SGLFormer:
    """SGLFormer-4-384, CIFAR (one super-block, 16 heads): 8,852,874 parameters at 10 classes."""
    arch = dict(depth=1, embed_dim=384, num_heads=16)
    return SGLFormer(**{**arch, **overrides})
