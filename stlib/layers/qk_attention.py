"""Q-K attention (QKFormer, Zhou et al. NeurIPS 2024, Sec. 3.2): binary attention from Q alone.

There is no V and no ``N x N`` (or ``d x d``) matrix: Q is summed along one axis, a spiking
neuron turns the sum into a binary mask, and the mask gates K. The cost is linear in N and D.

* token version, QKTA (Eq. 5-6), used by QKFormer's stages 1-2: one mask value per token and
  head, ``A_t = SN_attn(sum_over_head_channels(Q))``, ``X' = A_t * K``;
* channel version, QKCA (Eq. 7-8, described in the paper, not used by the released models): one
  mask value per channel, ``A_c = SN_attn(sum_over_tokens(Q))``, ``X' = A_c * K``.

Both end with ``SN(BN(Linear(X')))`` and register in :data:`ATTENTIONS` (``"qk_token"``,
``"qk_channel"``) with SSA's constructor, so any Spikformer-style model can select them.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import ATTENTIONS, NeuronFactory
from .multistep import LinearBN


class _QKBase(nn.Module):
    """Shared parts: ``Q, K = SN(BN(W x))`` (no bias: QKFormer's Conv1d layers have none),
    the mask neuron at ``attn_v_threshold`` (0.5) and the output ``SN(BN(Linear(.)))``.

    ``scale`` multiplies the summed Q before the mask neuron. QKFormer has no scale (1.0); it is
    kept as an argument so that a host model passing SSA's 0.125 gets a defined behaviour
    (``SN_th(s * X) = SN_{th/s}(X)`` for LIF: a higher effective mask threshold).
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 1.0,
                 attn_v_threshold: float = 0.5, qk_bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.scale = num_heads, scale
        self.q, self.k = LinearBN(dim, dim, bias=qk_bias), LinearBN(dim, dim, bias=qk_bias)
        self.q_neuron, self.k_neuron = neuron(), neuron()
        self.attn_neuron = neuron(v_threshold=attn_v_threshold)
        self.proj = LinearBN(dim, dim)  # QKFormer's proj Conv1d has a bias
        self.proj_neuron = neuron()

    def mask(self, q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, N, D = x.shape
        h = self.num_heads
        q = self.q_neuron(self.q(x)).reshape(T, B, N, h, D // h)  # [T, B, N, h, d] spikes
        k = self.k_neuron(self.k(x)).reshape(T, B, N, h, D // h)
        y = (self.mask(q) * k).reshape(T, B, N, D)  # still binary: a mask on K
        return self.proj_neuron(self.proj(y))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, scale={self.scale}"


@ATTENTIONS.register("qk_token")
class QKTokenAttention(_QKBase):
    """Q-K token attention, QKTA: ``A_t = SN_0.5(s * sum_d Q)``, one bit per token and head.

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes). Head ``i`` owns channels ``[i d, (i+1) d)``,
    as in the official ``[T, B, h, d, N]`` reshape.
    """

    def mask(self, q: torch.Tensor) -> torch.Tensor:  # q [T, B, N, h, d] -> [T, B, N, h, 1]
        return self.attn_neuron(q.sum(-1, keepdim=True) * self.scale)


@ATTENTIONS.register("qk_channel")
class QKChannelAttention(_QKBase):
    """Q-K channel attention, QKCA: ``A_c = SN_0.5(s * sum_N Q)``, one bit per channel.

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes); heads do not change the result (the sum runs
    over tokens, per channel).
    """

    def mask(self, q: torch.Tensor) -> torch.Tensor:  # q [T, B, N, h, d] -> [T, B, 1, h, d]
        return self.attn_neuron(q.sum(2, keepdim=True) * self.scale)
