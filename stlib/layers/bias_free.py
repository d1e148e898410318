"""Bias-free variants of Spikformer's SSA and MLP (every Linear/1x1 conv without bias).

SGLFormer (all its 1x1 convs) and TIM (its Q/K/V/proj Conv1d) build their token mixers with
``bias=False`` everywhere, while :class:`~stlib.layers.SSA` keeps a bias on ``proj`` and
:class:`~stlib.layers.SpikingMLP` on both layers (Spikformer's CIFAR ``nn.Linear``). The
maths is unchanged; only the parameter count differs (and it must match the official code).
A 1x1 convolution over ``[T*B, C, H, W]`` followed by BatchNorm2d is exactly a bias-free
Linear over tokens ``[T, B, N, C]`` followed by BatchNorm over C, which is what these run.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .attention import ATTENTIONS, SSA
from .mlp import SpikingMLP
from .multistep import LinearBN

NeuronFactory = Callable[..., nn.Module]


@ATTENTIONS.register("ssa_nobias")
class BiasFreeSSA(SSA):
    """:class:`~stlib.layers.SSA` with no bias on Q, K, V and proj (Spikformer Eq. 9-10).

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes); ``D^2 * 4 + 8 D`` parameters (4 x (W + BN)).
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.125,
                 attn_v_threshold: float = 0.5):
        super().__init__(dim, num_heads=num_heads, neuron=neuron, scale=scale,
                         attn_v_threshold=attn_v_threshold, qkv_bias=False)
        self.proj = LinearBN(dim, dim, bias=False)  # replaces SSA's biased proj


class BiasFreeMLP(SpikingMLP):
    """:class:`~stlib.layers.SpikingMLP` with bias-free layers: ``SN(BN(W2 SN(BN(W1 x))))``.

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes).
    """

    def __init__(self, dim: int, hidden_dim: int, *, neuron: NeuronFactory):
        super().__init__(dim, hidden_dim, neuron=neuron)
        self.fc1 = LinearBN(dim, hidden_dim, bias=False)
        self.fc2 = LinearBN(hidden_dim, dim, bias=False)
