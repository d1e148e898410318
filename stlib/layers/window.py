"""Swin-style window attention with spiking activations (MST, Wang et al. ICCV 2023).

Tokens are ``[T, B, L, C]`` with ``L = H * W`` on a grid; attention runs inside
non-overlapping ``M x M`` windows, every second block on windows shifted by ``M / 2``
(Swin, Liu et al. ICCV 2021). The window partition, its inverse and the relative position
index are timm's (:mod:`timm.models.swin_transformer`).

Random Spike Masking (MST Sec. 3.3): the Q, K and attention-map spikes are multiplied by a
Bernoulli mask that keeps each element with probability ``1 - masking_ratio``, in training
and at inference alike (the official ``Masking_Spike``).
"""
from __future__ import annotations

from typing import Callable

import torch
from timm.models.swin_transformer import get_relative_position_index, window_partition, window_reverse
from torch import nn

NeuronFactory = Callable[..., nn.Module]


def random_spike_mask(x: torch.Tensor, masking_ratio: float) -> torch.Tensor:
    """``x * (U > masking_ratio)``, U uniform on [0, 1) per element (MST's ``Masking_Spike``);
    a ratio of 0 returns ``x`` itself (no random numbers drawn)."""
    if masking_ratio <= 0.0:
        return x
    return x * torch.rand(x.shape, device=x.device).gt(masking_ratio)


def shifted_window_mask(resolution: tuple[int, int], window: int, shift: int) -> torch.Tensor | None:
    """The additive attention mask of shifted windows, ``[num_windows, M*M, M*M]`` (0 within
    one region of the rolled grid, -100 across regions), or None when ``shift`` is 0."""
    if shift == 0:
        return None
    H, W = resolution
    region = torch.zeros(1, H, W, 1)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for label, (rows, cols) in enumerate((r, c) for r in bands for c in bands):
        region[:, rows, cols, :] = label
    labels = window_partition(region, (window, window)).view(-1, window * window)
    differ = labels.unsqueeze(1) - labels.unsqueeze(2)
    return differ.masked_fill(differ != 0, -100.0).masked_fill(differ == 0, 0.0)


def batch_norm_tokens(norm: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over the channels of tokens ``x [..., C]`` (statistics over every token,
    sample and step: the official ``norm(x.transpose(1, 2))`` on ``[B, C, L]``)."""
    return norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class SpikingWindowAttention(nn.Module):
    """Window multi-head self-attention on spikes, with Swin's relative position bias.

    ``x [T, B', N, C] -> [T, B', N, C]`` (``B'`` = batch x windows, ``N = M*M``)::

        Q, K, V = SN(qkv(x))                       # three neurons
        A = SN(mask(Q) mask(K)^T * d^-1/2)          # the attention-map neuron, then masked
        A = softmax(mask(A) + B_rel [+ shift mask])
        out = SN(proj(SN(A V)))

    ``mask`` is :func:`random_spike_mask`; Q, K, A are masked, V is not (the official code).
    The softmax stays in the converted SNN, as in the official code.
    """

    def __init__(self, dim: int, window: int, num_heads: int, *, neuron: NeuronFactory,
                 qkv_bias: bool = True, masking_ratio: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.window, self.num_heads = dim, window, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.masking_ratio = masking_ratio
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        # derived from the window alone: not saved (official checkpoints carry it; it is skipped)
        self.register_buffer("relative_position_index", get_relative_position_index(window, window),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.attn_neuron = neuron()
        self.attn_v_neuron = neuron()
        self.proj = nn.Linear(dim, dim)
        self.proj_neuron = neuron()
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:  # [heads, N, N]
        n = self.window * self.window
        table = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return table.view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        T, B, N, C = x.shape
        qkv = self.qkv(x).reshape(T, B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each [T, B', heads, N, d]
        q = random_spike_mask(self.q_neuron(q), self.masking_ratio)
        k = random_spike_mask(self.k_neuron(k), self.masking_ratio)
        attn = self.attn_neuron((q @ k.transpose(-2, -1)) * self.scale)
        attn = random_spike_mask(attn, self.masking_ratio) + self.relative_position_bias()
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(T, B // windows, windows, self.num_heads, N, N) + mask.unsqueeze(1)
            attn = attn.view(T, B, self.num_heads, N, N)
        x = (attn.softmax(-1) @ self.v_neuron(v)).transpose(2, 3).reshape(T, B, N, C)
        return self.proj_neuron(self.proj(self.attn_v_neuron(x)))


class SpikingPatchMerging(nn.Module):
    """Swin's patch merging with a spiking output: each 2x2 group of tokens is concatenated
    (``4C``), batch-normalised, projected to ``2C`` (no bias) and fired.

    ``x [T, B, H*W, C] -> [T, B, H*W/4, 2C]``.
    """

    def __init__(self, resolution: tuple[int, int], dim: int, *, neuron: NeuronFactory):
        super().__init__()
        H, W = resolution
        if H % 2 or W % 2:
            raise ValueError(f"patch merging needs an even token grid, got {H}x{W}")
        self.resolution = resolution
        self.norm = nn.BatchNorm1d(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, _, C = x.shape
        H, W = self.resolution
        x = x.view(T, B, H, W, C)
        # the order of the official concat: (0,0), (1,0), (0,1), (1,1)
        x = torch.cat([x[:, :, i::2, j::2] for j in (0, 1) for i in (0, 1)], dim=-1)
        x = batch_norm_tokens(self.norm, x.reshape(T, B, -1, 4 * C))
        return self.neuron(self.reduction(x))


def windows_of(x: torch.Tensor, resolution: tuple[int, int], window: int, shift: int) -> torch.Tensor:
    """``x [T, B, H*W, C]`` -> windows ``[T, B*num_windows, M*M, C]``, rolled by ``-shift``."""
    T, B, _, C = x.shape
    grid = x.reshape(T * B, *resolution, C)
    if shift:
        grid = torch.roll(grid, shifts=(-shift, -shift), dims=(1, 2))
    return window_partition(grid, (window, window)).view(T, -1, window * window, C)


def tokens_of(windows: torch.Tensor, resolution: tuple[int, int], window: int, shift: int) -> torch.Tensor:
    """The inverse of :func:`windows_of`: ``[T, B*num_windows, M*M, C] -> [T, B, H*W, C]``."""
    T, C = windows.shape[0], windows.shape[-1]
    grid = window_reverse(windows.reshape(-1, window, window, C), (window, window), *resolution)
    if shift:
        grid = torch.roll(grid, shifts=(shift, shift), dims=(1, 2))
    return grid.reshape(T, -1, resolution[0] * resolution[1], C)
