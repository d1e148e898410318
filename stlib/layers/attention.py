"""Spiking self-attention variants on tokens ``[T, B, N, D] -> [T, B, N, D]``.

Looked up by name through :data:`ATTENTIONS` (``get_attention("ssa")``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..registry import Registry
from .multistep import LinearBN

NeuronFactory = Callable[..., nn.Module]
ATTENTIONS: Registry[type[nn.Module]] = Registry("attention")


@ATTENTIONS.register("ssa")
class SSA(nn.Module):
    """Spiking Self-Attention (Spikformer, Zhou et al. ICLR 2023, Eq. 9-10).

    ``Q, K, V = SN(BN(Linear(x)))``; per head ``SSA' = SN_attn(Q K^T V * s)`` with no softmax,
    scale ``s`` (0.125 on CIFAR/ImageNet) and the attention neuron at ``attn_v_threshold``
    (0.5, a property of the model kept whatever neuron type is configured); then
    ``SSA = SN(BN(Linear(SSA')))``.

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes).
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.125,
                 attn_v_threshold: float = 0.5, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.scale = num_heads, scale
        self.q, self.k, self.v = (LinearBN(dim, dim, bias=qkv_bias) for _ in range(3))
        self.q_neuron, self.k_neuron, self.v_neuron = neuron(), neuron(), neuron()
        self.attn_neuron = neuron(v_threshold=attn_v_threshold)
        self.proj = LinearBN(dim, dim)
        self.proj_neuron = neuron()

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        T, B, N, D = x.shape
        return x.reshape(T, B, N, self.num_heads, D // self.num_heads).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, N, D = x.shape
        q = self.heads(self.q_neuron(self.q(x)))  # [T, B, h, N, d]
        k = self.heads(self.k_neuron(self.k(x)))
        v = self.heads(self.v_neuron(self.v(x)))
        y = (q @ k.transpose(-2, -1)) @ v * self.scale  # [T, B, h, N, d], integer-valued * s
        y = y.transpose(2, 3).reshape(T, B, N, D)
        y = self.attn_neuron(y)
        return self.proj_neuron(self.proj(y))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, scale={self.scale}"


def get_attention(spec: str | type[nn.Module]) -> type[nn.Module]:
    """An attention class from its registered name (or the class itself)."""
    return spec if isinstance(spec, type) else ATTENTIONS.get(spec)
