"""Spiking MLPs on tokens ``[T, B, N, D]``."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .multistep import LinearBN

NeuronFactory = Callable[..., nn.Module]


class SpikingMLP(nn.Module):
    """``SN(BN(Linear(SN(BN(Linear(x))))))``, hidden width ``mlp_ratio * D`` (Spikformer Eq. 5).

    ``input`` is an ``nn.Identity`` whose output is the MLP's input: the Grad-CAM target layer
    of Spikformer-family models (the input of the last block's MLP).

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes). ``batch_norm=False`` drops the two BNs
    (MST's CIFAR MLP: ``SN(Linear(SN(Linear(x))))``).
    """

    def __init__(self, dim: int, hidden_dim: int, *, neuron: NeuronFactory, batch_norm: bool = True):
        super().__init__()
        linear = LinearBN if batch_norm else nn.Linear
        self.input = nn.Identity()
        self.fc1 = linear(dim, hidden_dim)
        self.fc1_neuron = neuron()
        self.fc2 = linear(hidden_dim, dim)
        self.fc2_neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1_neuron(self.fc1(self.input(x)))
        return self.fc2_neuron(self.fc2(x))
