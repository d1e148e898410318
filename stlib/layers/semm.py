"""Spiking Experts Mixture Mechanism, SEMM ("Spiking Transformer with Experts Mixture", Zhou et
al., NeurIPS 2024): a spiking router gates spiking experts element-wise (mask and add), with
no softmax and no top-k, so the mixture stays spike-driven and dynamically sparse.

No official code is known; the structure follows the only public port (Fancyssc/
SpikingTransformerBenchmark ``spikf_semm_cifar.py``), as described in
shared/reference/MODELS-1.md section 7:

* :class:`EMSA` (experts-mixture spiking attention, registered as ``"emsa"``): E query experts
  share one K and one V; a router emits one spike per token and expert;
* :class:`EMSP` (experts-mixture spiking perceptron): the hidden layer's two halves are a
  depthwise-conv "expert" branch and its per-channel gate.

Both map tokens ``[T, B, N, D] -> [T, B, N, D]`` (spikes) and plug into
:class:`~stlib.layers.SpikingBlock`.
"""
from __future__ import annotations

import torch
from torch import nn

from .attention import ATTENTIONS, NeuronFactory
from .multistep import LinearBN, SeqToBatch
from .spike_driven import grid_to_tokens, tokens_to_grid


@ATTENTIONS.register("emsa")
class EMSA(nn.Module):
    """Experts-mixture spiking self-attention.

    ``K = SN(BN(Linear(x)))`` (width e), ``V = SN(BN(Linear(x)))`` (width D),
    ``R = SN(BN(Linear(x)))`` (width E: one gate spike per token and expert), and per expert i
    ``Q_i = SN(BN(Linear_i(x)))`` (width e), ``O_i = SN_attn(Q_i K^T V * s)``; then
    ``Y = sum_i R_i * O_i`` (integer, 0..E) and ``out = SN(BN(Linear(Y)))``.

    The E query projections are one ``LinearBN(D, E * e)``: the same parameters as E separate
    ``Linear + BN1d`` (BN is per channel), in one GEMM. Every expert keeps its own Q and
    attention neuron (per-expert state and, for PLIF-like neurons, per-expert parameters).
    The attention runs without a head split, as in the port; ``num_heads`` is accepted for
    the shared attention signature and not used (the experts take the heads' place).
    ``expert_dim=None`` is ``D / 4`` (96 at D = 384, the port's setting).

    ``port_router=True`` reproduces the port's router exactly: it applies BN1d to
    ``[T*B, E, N]`` and reshapes that straight to ``[T, B, N, E]``, without transposing back,
    so "token n, expert i" reads another (token, expert) cell. The default gives each token
    its own E gates, as the paper describes.

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes).
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.125,
                 attn_v_threshold: float = 0.5, num_experts: int = 4,
                 expert_dim: int | None = None, port_router: bool = False):
        super().__init__()
        e = expert_dim or dim // 4
        if num_experts < 1 or e < 1:
            raise ValueError(f"EMSA needs num_experts >= 1 and expert_dim >= 1, got "
                             f"{num_experts} and {e}")
        self.num_experts, self.expert_dim, self.scale = num_experts, e, scale
        self.num_heads = num_heads  # unused, see the docstring
        self.k, self.v = LinearBN(dim, e), LinearBN(dim, dim)
        self.k_neuron, self.v_neuron = neuron(), neuron()
        self.router = LinearBN(dim, num_experts)
        self.router_neuron = neuron()
        self.port_router = port_router
        self.q = LinearBN(dim, num_experts * e)  # the E expert query projections, stacked
        self.q_neurons = nn.ModuleList(neuron() for _ in range(num_experts))
        self.attn_neurons = nn.ModuleList(
            neuron(v_threshold=attn_v_threshold) for _ in range(num_experts))
        self.proj = LinearBN(dim, dim)
        self.proj_neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.k_neuron(self.k(x))  # [T, B, N, e]
        v = self.v_neuron(self.v(x))  # [T, B, N, D]
        route = self.router(x)  # [T, B, N, E]
        if self.port_router:  # the port's [T*B, E, N] read as [T, B, N, E]
            route = route.transpose(-2, -1).reshape(route.shape)
        gates = self.router_neuron(route)  # [T, B, N, E] spikes
        kv = k.transpose(-2, -1) @ v  # [T, B, e, D]; Q (K^T V) = (Q K^T) V on integers
        queries = self.q(x).split(self.expert_dim, dim=-1)  # E x [T, B, N, e]
        y = 0
        for i, (q, q_sn, attn_sn) in enumerate(zip(queries, self.q_neurons, self.attn_neurons)):
            out = attn_sn(q_sn(q) @ kv * self.scale)  # [T, B, N, D] spikes
            y = y + gates[..., i:i + 1] * out  # the router's spike masks the expert
        return self.proj_neuron(self.proj(y))

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, expert_dim={self.expert_dim}, "
                f"scale={self.scale}" + (", port_router=True" if self.port_router else ""))


class EMSP(nn.Module):
    """Experts-mixture spiking perceptron.

    ``h = SN(BN(Linear(x)))`` (width ``mlp_ratio * D``), split into halves ``h1, h2``;
    ``g = SN(BN(DWConv3x3(h1)))`` on the token grid; ``out = SN(BN(Linear(g * h2)))``.

    The grid is ``sqrt(N) x sqrt(N)`` of the tokens (the port hard-codes 8x8, CIFAR's grid);
    N must be a square. ``input`` is the Grad-CAM target (as in
    :class:`~stlib.layers.SpikingMLP`).

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes).
    """

    def __init__(self, dim: int, hidden_dim: int, *, neuron: NeuronFactory):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"EMSP splits its hidden layer in two halves; {hidden_dim} is odd")
        half = hidden_dim // 2
        self.input = nn.Identity()
        self.fc1 = LinearBN(dim, hidden_dim)
        self.fc1_neuron = neuron()
        self.dwconv = SeqToBatch(nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False),
                                 nn.BatchNorm2d(half))
        self.dw_neuron = neuron()
        self.fc2 = LinearBN(half, dim)
        self.fc2_neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1_neuron(self.fc1(self.input(x)))  # [T, B, N, hidden]
        h1, h2 = h.chunk(2, dim=-1)  # [T, B, N, hidden/2] each
        g = self.dw_neuron(self.dwconv(tokens_to_grid(h1)))  # [T, B, hidden/2, sqrt N, sqrt N]
        return self.fc2_neuron(self.fc2(grid_to_tokens(g) * h2))
