"""Temporal Interaction Module (TIM) and the SSA that uses it (Shen et al., IJCAI 2024).

Paper: "TIM: An Efficient Temporal Interaction Module for Spiking Transformer"
(arXiv 2401.11687); official code BrainCog-X/Brain-Cog examples/TIM (re-implemented from
shared/reference/MODELS-2.md, section 4).

TIM acts on the query spikes only, recurrently over time::

    Q~[0] = Q[0]
    Q~[t] = SN_out( alpha * SN_in( Conv1d_k5(Q~[t-1]) ) + (1 - alpha) * Q[t] ),   t >= 1

so the query of step t carries what the attention looked for at step t-1.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .attention import ATTENTIONS
from .bias_free import BiasFreeSSA

NeuronFactory = Callable[..., nn.Module]


def neuron_step(neuron: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
    """One step ``t`` of a multi-step stlib neuron whose state persists between calls.

    TIM's recurrence needs the output of step t-1 before it can form the input of step t,
    so the neuron cannot run over all T in one call. This drives the neuron's own
    ``charge -> fire -> reset`` steps (:class:`~stlib.neurons.reference.BaseNeuron`); state
    is fresh at ``t == 0``. ``x [...]`` (one step) -> spikes ``[...]``.
    """
    if not all(hasattr(neuron, m) for m in ("init_state", "charge", "fire", "reset")):
        raise TypeError(f"TIM needs a stepwise neuron (charge/fire/reset), got {type(neuron).__name__}")
    state = x.to(torch.promote_types(x.dtype, torch.float32))  # neuron math in >= fp32 (AMP)
    if t == 0:
        neuron.init_state(state)
    neuron.charge(state, t)
    spike = neuron.fire()
    neuron.reset(spike)
    return spike.to(x.dtype)


class TemporalInteraction(nn.Module):
    """TIM on the queries: ``q [T, B, h, N, d] -> [T, B, h, N, d]`` (spikes).

    ``Conv1d(N, N, 5, padding=2)`` runs on each head's previous query viewed as
    ``[B*h, N, d]`` (channels = tokens, length = head dim); it is why the module needs
    ``num_tokens``. ``SN_in`` / ``SN_out`` keep their membranes across the t loop.
    """

    def __init__(self, num_tokens: int, *, neuron: NeuronFactory, alpha: float = 0.5,
                 in_v_threshold: float = 0.3, out_v_threshold: float = 0.5, kernel_size: int = 5):
        super().__init__()
        self.num_tokens, self.alpha = num_tokens, alpha
        self.interactor = nn.Conv1d(num_tokens, num_tokens, kernel_size, padding=kernel_size // 2)
        self.in_neuron = neuron(v_threshold=in_v_threshold)
        self.out_neuron = neuron(v_threshold=out_v_threshold)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        T, B, h, N, d = q.shape
        if N != self.num_tokens:
            raise ValueError(f"TIM was built for {self.num_tokens} tokens, got {N}")
        out = [q[0]]
        for t in range(1, T):
            prev = self.interactor(out[-1].reshape(B * h, N, d)).reshape(B, h, N, d)
            mixed = self.alpha * neuron_step(self.in_neuron, prev, t - 1) + (1 - self.alpha) * q[t]
            out.append(neuron_step(self.out_neuron, mixed, t - 1))
        for n in (self.in_neuron, self.out_neuron):  # keep no graph alive between calls
            n.v = None if getattr(n, "v", None) is None else n.v.detach()
        return torch.stack(out)

    def extra_repr(self) -> str:
        return f"num_tokens={self.num_tokens}, alpha={self.alpha}"


@ATTENTIONS.register("ssa_tim")
class TIMSSA(BiasFreeSSA):
    """Spikformer SSA (bias-free Q/K/V/proj) with TIM on the queries.

    ``Q, K, V = SN(BN(W x))``; ``Q~ = TIM(Q)``; ``Y = SN_attn(Q~ K^T V * s)``;
    ``out = SN(BN(W_proj Y))``. ``x [T, B, N, D] -> [T, B, N, D]`` (spikes).

    ``untransposed_head_split=True`` reshapes the ``[T, B, C, N]`` tensor straight to
    ``[T, B, N, h, d]`` without a transpose (the "token" axis then indexes channel groups);
    the default is the standard split, which is what the official code does.
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.25,
                 attn_v_threshold: float = 0.5, num_tokens: int = 16, tim_alpha: float = 0.5,
                 tim_in_v_threshold: float = 0.3, tim_out_v_threshold: float = 0.5,
                 untransposed_head_split: bool = False):
        super().__init__(dim, num_heads=num_heads, neuron=neuron, scale=scale,
                         attn_v_threshold=attn_v_threshold)
        self.untransposed_head_split = untransposed_head_split
        self.tim = TemporalInteraction(num_tokens, neuron=neuron, alpha=tim_alpha,
                                       in_v_threshold=tim_in_v_threshold,
                                       out_v_threshold=tim_out_v_threshold)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        if not self.untransposed_head_split:
            return super().heads(x)
        T, B, N, D = x.shape  # official: [T, B, C, N] read as [T, B, N, h, d]
        return x.transpose(2, 3).reshape(T, B, N, self.num_heads, D // self.num_heads).permute(0, 1, 3, 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.spiking_heads(x)  # [T, B, h, N, d], through this class's head split
        q = self.tim(q)  # recurrent over T
        y = (q @ k.transpose(-2, -1)) @ v * self.scale
        y = self.attn_neuron(self.merge(y))
        return self.proj_neuron(self.proj(y))
