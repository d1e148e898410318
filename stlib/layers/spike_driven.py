"""Blocks of the spike-driven ("membrane shortcut") family: Spikingformer, Spike-driven
Transformer v1 (SDT) and Meta-SpikeFormer (SDT v2), reused by STAtten-style variants.

In these models every spiking neuron sits *before* a conv/linear (pre-activation), so
every conv/linear input is binary, and residuals add real-valued BN outputs. Facts from
shared/reference/MODELS-1.md sections 2-4.

Attention contract (shared with :class:`stlib.layers.attention.SSA`): an attention maps
tokens ``[T, B, N, D] -> [T, B, N, D]`` and returns the *branch* only; the residual is added
by :class:`stlib.layers.block.SpikingBlock` (``x = x + attn(x); x = x + mlp(x)``), which is
exactly SDT's ``MLP(SDSA(x))`` with a residual inside each. Pre-activation attentions start
with their own shortcut neuron (``s = SN(x)``).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import ATTENTIONS, HeadedAttention
from .grid import grid_to_tokens, max3x3, tokens_to_grid
from .multistep import ConvBN, LinearBN, seq_to_batch

NeuronFactory = Callable[..., nn.Module]

__all__ = ["PreActSPS", "MSSPS", "PreActMLP", "SpikingTokenHead", "PreActSSA", "SDSA",
           "BNAndPad", "RepConv", "RepConvBN", "SDSA3", "LinearSDSA", "grid_to_tokens", "tokens_to_grid"]


def _pool_stride(img_size: int, pool_stages: Sequence[bool]) -> int:
    """The tokenizer's total downsampling (2 per pooled stage), checked against the image."""
    stride = math.prod(2 if p else 1 for p in pool_stages)
    problem = (f"needs 4 booleans (one per stage), got {list(pool_stages)}" if len(pool_stages) != 4
               else f"downsamples by {stride}, which image size {img_size} is not divisible by"
               if img_size % stride else None)
    if problem:
        raise ValueError(f"tokenizer pool_stages {problem}")
    return stride


def _pool(flag: bool) -> nn.Module:
    return nn.MaxPool2d(3, 2, 1) if flag else nn.Identity()


class PreActSPS(nn.Module):
    """Spikingformer's Spiking Tokenizer (pre-activation SPS, 5 convs, no separate RPE).

    ``conv0 -> BN``, then four times ``SN -> [MaxPool] -> Conv3x3 -> BN`` with widths
    D/4, D/2, D, D; ``pool_stages[i]`` puts a ``MaxPool(3, 2, 1)`` before conv ``i+1``
    (CIFAR: the last two, 32 -> 8; ImageNet / DVS: all four, 224 -> 14, 128 -> 8).
    Same parameter count as :class:`~stlib.layers.embed.SPS`.

    ``x [T, B, C_in, H, W] -> tokens [T, B, N, D]`` (real-valued, membrane-like).
    """

    def __init__(self, *, img_size: int, in_chans: int, embed_dim: int,
                 pool_stages: Sequence[bool], neuron: NeuronFactory):
        super().__init__()
        stride = _pool_stride(img_size, pool_stages)
        widths = [embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim, embed_dim]
        self.stem = ConvBN(in_chans, widths[0])
        self.neurons = nn.ModuleList(neuron() for _ in range(4))
        self.pools = nn.ModuleList(_pool(p) for p in pool_stages)
        self.stages = nn.ModuleList(ConvBN(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.grid = img_size // stride
        self.num_patches = self.grid ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # [T, B, D/8, H, W], real-valued (direct encoding: no neuron)
        for sn, pool, conv_bn in zip(self.neurons, self.pools, self.stages):
            x = conv_bn(seq_to_batch(pool, sn(x)))
        return grid_to_tokens(x)  # [T, B, N, D]


class MSSPS(nn.Module):
    """SDT's MS_SPS: ``Conv3x3 -> BN -> SN -> [MaxPool]`` for stages 1-3 (widths D/8, D/4,
    D/2), stage 4 ``Conv3x3 -> BN -> [MaxPool]`` with no neuron (``x_feat`` stays real), then
    the membrane-shortcut RPE ``x = x_feat + BN(Conv3x3(SN(x_feat)))``.

    ``pool_stages`` is SDT's ``pooling_stat`` ("0011" on CIFAR: 32 -> 8; "1111" on ImageNet).

    ``x [T, B, C_in, H, W] -> tokens [T, B, N, D]`` (real-valued).
    """

    def __init__(self, *, img_size: int, in_chans: int, embed_dim: int,
                 pool_stages: Sequence[bool], neuron: NeuronFactory):
        super().__init__()
        stride = _pool_stride(img_size, pool_stages)
        widths = [embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        self.stages = nn.ModuleList(ConvBN(i, o) for i, o in zip([in_chans, *widths[:-1]], widths))
        # no neuron after stage 4: the RPE's own shortcut neuron spikes x_feat
        self.neurons = nn.ModuleList([*(neuron() for _ in range(3)), nn.Identity()])
        self.pools = nn.ModuleList(_pool(p) for p in pool_stages)
        self.rpe_neuron = neuron()
        self.rpe = ConvBN(embed_dim, embed_dim)
        self.grid = img_size // stride
        self.num_patches = self.grid ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv_bn, sn, pool in zip(self.stages, self.neurons, self.pools):
            x = seq_to_batch(pool, sn(conv_bn(x)))
        x = x + self.rpe(self.rpe_neuron(x))  # [T, B, D, H', W'], membrane shortcut
        return grid_to_tokens(x)


class PreActMLP(nn.Module):
    """``BN(Linear(SN(BN(Linear(SN(x))))))`` (SDT's MS_MLP, Spikingformer's MLP).

    Linear on tokens = the official Conv1d/Conv2d 1x1 with bias (same parameters).
    ``input`` is the Grad-CAM target (an ``nn.Identity`` on the MLP's input).

    ``x [T, B, N, D] -> [T, B, N, D]`` (real-valued branch; the block adds the residual).
    """

    def __init__(self, dim: int, hidden_dim: int, *, neuron: NeuronFactory):
        super().__init__()
        self.input = nn.Identity()
        self.fc1_neuron = neuron()
        self.fc1 = LinearBN(dim, hidden_dim)
        self.fc2_neuron = neuron()
        self.fc2 = LinearBN(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(self.fc1_neuron(self.input(x)))
        return self.fc2(self.fc2_neuron(x))


class SpikingTokenHead(nn.Module):
    """SDT's head: ``Linear(SN(mean_N(x)))`` per step, then mean over T.

    ``x [T, B, N, D] -> logits [B, classes]`` or ``[T, B, classes]`` with ``per_step=True``
    (SDT's TET mode). Tokens may also come as a feature map ``[T, B, D, H, W]`` with
    ``spatial=True`` (Meta-SpikeFormer). ``neuron=None`` leaves the neuron out (the official
    Meta-SpikeFormer code feeds its main head the real-valued mean).
    """

    def __init__(self, dim: int, num_classes: int, *, neuron: NeuronFactory | None,
                 per_step: bool = False, spatial: bool = False):
        super().__init__()
        self.per_step, self.spatial = per_step, spatial
        self.neuron = neuron() if neuron is not None else nn.Identity()
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(3).mean(3) if self.spatial else x.mean(2)  # [T, B, D]
        logits = self.fc(self.neuron(x))  # [T, B, classes]
        return logits if self.per_step else logits.mean(0)


class _PreActAttention(HeadedAttention):
    """The pre-activation attention parts: ``s = SN(x)``, ``Q, K, V = SN(BN(Linear(s)))``
    (no bias by default, the official 1x1 convs), the attention neuron at
    ``attn_v_threshold`` and the output ``BN(Linear(.))`` with no neuron. Subclasses differ
    only in how Q, K, V mix (``forward``)."""

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.125,
                 attn_v_threshold: float = 0.5, qkv_bias: bool = False):
        super().__init__(dim, num_heads)
        self.scale = scale
        self.shortcut_neuron = neuron()
        self.q, self.k, self.v = (LinearBN(dim, dim, bias=qkv_bias) for _ in range(3))
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.attn_neuron = neuron(v_threshold=attn_v_threshold)
        self.proj = LinearBN(dim, dim)

    def spiking_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x [T, B, N, D]`` -> spiking Q, K, V per head, each ``[T, B, h, N, d]``."""
        return self.spiking_heads(self.shortcut_neuron(x))


@ATTENTIONS.register("ssa_preact")
class PreActSSA(_PreActAttention):
    """Spikingformer's SSA with a pre-activation (membrane) shortcut.

    ``s = SN(x)``; ``Q, K, V = SN(BN(Linear_nobias(s)))``;
    ``Y = SN_attn((Q K^T) V * scale)`` (attention neuron at ``attn_v_threshold``, 0.5);
    returns ``BN(Linear(Y))`` with no output neuron (the block adds it to the real-valued x).

    ``x [T, B, N, D] -> [T, B, N, D]``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.spiking_qkv(x)  # [T, B, h, N, d]
        y = (q @ k.transpose(-2, -1)) @ v * self.scale  # [T, B, h, N, d]
        return self.proj(self.attn_neuron(self.merge(y)))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, scale={self.scale}"


@ATTENTIONS.register("sdsa")
class SDSA(_PreActAttention):
    """Spike-Driven Self-Attention (SDT v1, Yao et al. NeurIPS 2023, Eq. 13-14).

    ``s = SN(x)``; ``Q, K, V = SN(BN(Linear_nobias(s)))`` per head ``[T, B, h, N, d]``;
    ``SDSA(Q, K, V) = Q ⊙ SN_0.5(SUM_N(K ⊙ V))`` (the column sum over tokens, then the
    "talking-heads" neuron at ``attn_v_threshold`` = 0.5); returns ``BN(Linear(Y))``.

    ``scale`` is accepted for the shared attention signature and is not used: the official
    code defines ``scale = 0.125`` and never applies it (no multiplication in SDSA). The
    official ``talking_heads`` Conv1d(h, h) is never called and is not built here.

    ``dvs=True`` is the official DVS mode ("Erode", :func:`max3x3`): K and V are max-pooled
    over the 3x3 token-grid neighbourhood after their neurons; ``K ⊙ V`` (before the sum) and
    ``Y`` are max-pooled too, in the official code's head layout ``[T, B, h, N, d]``, where
    the window spans neighbouring token indices (row-major grid order) and neighbouring
    channels of a head. Q is not pooled. No parameters are added.

    ``x [T, B, N, D] -> [T, B, N, D]`` (real-valued branch).
    """

    def __init__(self, dim: int, *, dvs: bool = False, **kwargs):
        super().__init__(dim, **kwargs)
        self.dvs = bool(dvs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # DVS mode: K, V pooled on the grid; K ⊙ V and Y in the head layout (as official)
        erode = max3x3 if self.dvs else (lambda t: t)
        q, k, v = self.spiking_heads(self.shortcut_neuron(x), pooled="kv" if self.dvs else "")
        a = self.attn_neuron(erode(k * v).sum(dim=3, keepdim=True))  # [T, B, h, 1, d], spikes
        return self.proj(self.merge(erode(q * a)))  # Q ⊙ a stays binary

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}" + (", dvs=True" if self.dvs else "")


class BNAndPad(nn.Module):
    """BatchNorm2d, then a ``pad``-pixel border filled with the BN's output for a zero input,
    ``beta - mean * gamma / sqrt(var + eps)`` (running statistics, gamma/beta detached, as the
    official RepConv does), so the padded conv equals a re-parameterizable 3x3 conv.

    ``x [N, C, H, W] -> [N, C, H + 2 pad, W + 2 pad]``.
    """

    def __init__(self, channels: int, pad: int = 1):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        if self.pad == 0:
            return y
        bn = self.bn
        std = torch.sqrt(bn.running_var + bn.eps)
        fill = bn.bias.detach() - bn.running_mean * bn.weight.detach() / std  # BN(0)
        p = self.pad
        y = F.pad(y, [p] * 4)
        border = torch.ones_like(y, dtype=torch.bool)
        border[:, :, p:-p, p:-p] = False
        return torch.where(border, fill.view(1, -1, 1, 1).to(y.dtype), y)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class RepConv(nn.Module):
    """Meta-SpikeFormer's RepConv: ``Conv1x1 -> BNAndPad -> DWConv3x3 (no padding) -> Conv1x1
    -> BN``, all convs without bias; ``2 d^2 + 13 d`` parameters at ``d -> d``.

    ``x [N, C_in, H, W] -> [N, C_out, H, W]`` (single-step layout: call it on ``T*B``).
    """

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_chans, in_chans, 1, bias=False),
            BNAndPad(in_chans, pad=1),
            nn.Conv2d(in_chans, in_chans, 3, groups=in_chans, bias=False),
            nn.Conv2d(in_chans, out_chans, 1, bias=False),
            nn.BatchNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class RepConvBN(nn.Module):
    """``BN(RepConv(x))`` on ``[T, B, C, H, W]`` (the official wraps every attention RepConv
    in ``Sequential(RepConv, BatchNorm2d)``: two BNs in a row, ``2 d^2 + 15 d`` parameters)."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(RepConv(dim, dim), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return seq_to_batch(self.body, x)


@ATTENTIONS.register("sdsa_3")
class SDSA3(HeadedAttention):
    """SDSA-3 of Meta-SpikeFormer (Yao et al. ICLR 2024, Eq. 19; ``MS_Attention_RepConv_qkv_id``).

    ``s = SN(x)``; ``Q, K, V = SN(BN(RepConv(s)))`` on the token grid;
    ``Y = SN_attn(Q (K^T V) * scale)`` with the attention neuron at ``attn_v_threshold``
    (0.5) and scale 0.125; returns ``BN(RepConv(Y))``. ``attn_neuron``, when given, builds
    the attention neuron instead of ``neuron``.

    Takes tokens of a square grid: ``x [T, B, N, D] -> [T, B, N, D]`` (``N = H*W``; the
    depthwise 3x3 inside RepConv needs the grid).
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.125,
                 attn_v_threshold: float | None = 0.5, attn_neuron: NeuronFactory | None = None):
        super().__init__(dim, num_heads)
        self.scale = scale
        self.shortcut_neuron = neuron()
        self.q, self.k, self.v = (RepConvBN(dim) for _ in range(3))
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        # attn_neuron: the attention site's own factory (QSD's MultiSpike with norm 2)
        self.attn_neuron = (attn_neuron or neuron)(v_threshold=attn_v_threshold)
        self.proj = RepConvBN(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = tokens_to_grid(self.shortcut_neuron(x))  # [T, B, D, H, W]
        q = self.heads(self.q_neuron(grid_to_tokens(self.q(s))))  # [T, B, h, N, d]
        k = self.heads(self.k_neuron(grid_to_tokens(self.k(s))))
        v = self.heads(self.v_neuron(grid_to_tokens(self.v(s))))
        y = q @ (k.transpose(-2, -1) @ v) * self.scale  # [T, B, h, N, d]
        y = self.attn_neuron(self.merge(y))  # [T, B, N, D], spikes
        return grid_to_tokens(self.proj(tokens_to_grid(y)))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, scale={self.scale}"


@ATTENTIONS.register("sdsa_linear")
class LinearSDSA(HeadedAttention):
    """E-SpikeFormer's attention (SDT v3, Yao et al. TPAMI 2025; official
    ``MS_Attention_linear`` with ``lamda_ratio=4``).

    ``s = SN(x)``; ``Q, K = SN(BN(Linear_nobias(s)))`` (``D -> D``), ``V = SN(BN(Linear_nobias(s)))``
    widened to ``v_ratio * D``; per head, ``Y = SN_attn((Q K^T) V * scale)`` with no softmax
    (the official scale is ``2 / sqrt(D / h)``, passed in by the model); returns
    ``BN(Linear_nobias(Y))`` from ``v_ratio * D`` back to ``D``. The official 1x1 convs on the
    feature map are these Linears on tokens (same parameters; BN over the same values).

    ``attn_v_threshold`` sets the attention neuron's threshold; ``None`` (E-SpikeFormer) keeps
    the configured neuron's own. ``x [T, B, N, D] -> [T, B, N, D]``.
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.125,
                 attn_v_threshold: float | None = None, v_ratio: int = 4):
        super().__init__(dim, num_heads)
        self.scale, self.v_ratio = scale, int(v_ratio)
        self.shortcut_neuron = neuron()
        self.q, self.k = LinearBN(dim, dim, bias=False), LinearBN(dim, dim, bias=False)
        self.v = LinearBN(dim, self.v_ratio * dim, bias=False)
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.attn_neuron = neuron(v_threshold=attn_v_threshold)
        self.proj = LinearBN(self.v_ratio * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.spiking_heads(self.shortcut_neuron(x))  # [T, B, h, N, d] (v: 4d)
        y = (q @ k.transpose(-2, -1)) @ v * self.scale  # [T, B, h, N, 4d]
        return self.proj(self.attn_neuron(self.merge(y)))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, scale={self.scale:.6g}, v_ratio={self.v_ratio}"
