"""Spiking self-attention variants on tokens ``[T, B, N, D] -> [T, B, N, D]``.

Looked up by name through :data:`ATTENTIONS` (``get_attention("ssa")``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..registry import Registry
from .grid import grid_max3x3
from .multistep import LinearBN

NeuronFactory = Callable[..., nn.Module]
ATTENTIONS: Registry[type[nn.Module]] = Registry("attention")


class HeadedAttention(nn.Module):
    """Common parts of the multi-head attentions: the head count check, the head split
    ``[T, B, N, D] -> [T, B, h, N, d]`` and its inverse, and the spiking projections."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        T, B, N, D = x.shape
        return x.reshape(T, B, N, self.num_heads, D // self.num_heads).transpose(2, 3)

    @staticmethod
    def merge(y: torch.Tensor) -> torch.Tensor:
        T, B, h, N, d = y.shape
        return y.transpose(2, 3).reshape(T, B, N, h * d)

    def spiking_heads(self, s: torch.Tensor, pooled: str = "") -> tuple[torch.Tensor, ...]:
        """``Q, K, V = SN(proj(s))`` of tokens ``s [T, B, N, D]`` (the ``q``/``k``/``v``
        projections and their ``*_neuron``), each split into heads ``[T, B, h, N, d]``. The
        names in ``pooled`` (``"q"``, ``"k"``, ``"v"``) are max-pooled over the 3x3 token grid
        after their neuron: the DVS modes of SDT and STAtten."""
        projections = {"q": (self.q, self.q_neuron), "k": (self.k, self.k_neuron),
                       "v": (self.v, self.v_neuron)}
        out = []
        for name, (proj, neuron) in projections.items():
            spikes = neuron(proj(s))
            out.append(self.heads(grid_max3x3(spikes) if name in pooled else spikes))
        return tuple(out)


@ATTENTIONS.register("ssa")
class SSA(HeadedAttention):
    """Spiking Self-Attention (Spikformer, Zhou et al. ICLR 2023, Eq. 9-10).

    ``Q, K, V = SN(BN(Linear(x)))``; per head ``SSA' = SN_attn(Q K^T V * s)`` with no softmax,
    scale ``s`` (0.125 on CIFAR/ImageNet) and the attention neuron at ``attn_v_threshold``
    (0.5, a property of the model kept whatever neuron type is configured); then
    ``SSA = SN(BN(Linear(SSA')))``.

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes).
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.125,
                 attn_v_threshold: float = 0.5, qkv_bias: bool = True):
        super().__init__(dim, num_heads)
        self.scale = scale
        self.q, self.k, self.v = (LinearBN(dim, dim, bias=qkv_bias) for _ in range(3))
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.attn_neuron = neuron(v_threshold=attn_v_threshold)
        self.proj = LinearBN(dim, dim)
        self.proj_neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.spiking_heads(x)  # [T, B, h, N, d]
        y = (q @ k.transpose(-2, -1)) @ v * self.scale  # [T, B, h, N, d], integer-valued * s
        y = self.attn_neuron(self.merge(y))
        return self.proj_neuron(self.proj(y))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, scale={self.scale}"


def get_attention(spec: str | type[nn.Module]) -> type[nn.Module]:
    """An attention class from its registered name (or the class itself)."""
    return spec if isinstance(spec, type) else ATTENTIONS.get(spec)
