"""STAtten: spatial-temporal attention in blocks of time steps (Lee et al., CVPR 2025,
"Spiking Transformer with Spatial-Temporal Attention", arXiv 2409.19764; official code
Intelligent-Computing-Lab-Yale/STAtten, re-implemented from shared/reference/MODELS-1.md s. 6).

Spiking self-attention normally mixes tokens within one time step. STAtten splits T into
``T / c`` chunks of ``c = chunk_size`` consecutive steps and lets every query of a chunk attend
to the tokens of all c steps of that chunk (Eq. 6-7 of the paper)::

    Q_c, K_c, V_c = concat over the c steps of the chunk    # [B, h, c*N, d]
    O_c = Q_c (K_c^T V_c) * s                               # linear attention, no softmax

The cost stays ``O(T N d^2)``, as for spatial-only linear attention. ``c = 1`` is Spikformer's
SSA exactly; ``c = T`` is full spatio-temporal attention.

The core is the pure function :func:`spatial_temporal_attention` on ``[T, B, h, N, d]``, so any
host attention can call it. Registered attentions:

* ``"statten"`` (:class:`STAtten`): Spikformer's SSA with the STAtten core, tokens
  ``[T, B, N, D]``; every other part (q/k/v/proj, neurons, the 0.5 attention threshold, the
  scale given by the host) is SSA's, so the parameter count is the host's.

* ``"statten_sdsa"`` (:class:`STAttenSDSA`): SDT v1's SDSA with the STAtten core, the form
  of the official code (the paper's main host): ``s = SN(x)``, bias-free Q/K/V, the core,
  ``SN_0.5``, then ``BN(Linear(.))`` with no output neuron (SDT adds it to the real-valued x).
  Same parameters as SDT's SDSA; the official code's never-called ``talking_heads`` Conv1d
  (h^2 per block) is not built, as in stlib's SDT.

Pick the name that matches the host's own attention (``"ssa"`` -> ``"statten"``, ``"sdsa"`` ->
``"statten_sdsa"``); a host names it with ``attn=...`` and passes the chunk with
``attn_kwargs={"chunk_size": c}`` (Spikformer and SDT both take it). The scale is the host's ``attn_scale``: the official
STAtten uses ``1 / H_tokens`` (0.125 on CIFAR's 8x8 grid, 1/14 on ImageNet), which is the
0.125 both hosts pass on CIFAR.
"""
from __future__ import annotations

import torch

from .attention import ATTENTIONS, SSA, NeuronFactory
from .grid import grid_max3x3
from .spike_driven import SDSA


def spatial_temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                               chunk_size: int, scale: float) -> torch.Tensor:
    """``q, k, v [T, B, h, N, d] -> [T, B, h, N, d]``: per chunk of ``chunk_size`` steps,
    ``Q_c (K_c^T V_c) * scale`` over the chunk's ``chunk_size * N`` tokens.

    Spikes in, integer multiples of ``scale`` out (exact in float32 below 2**24).
    """
    T, B, h, N, d = q.shape
    c = chunk_size
    if c < 1 or T % c:
        raise ValueError(f"STAtten: T={T} time steps cannot be split into chunks of "
                         f"chunk_size={c} (T must be a multiple of chunk_size)")

    def chunks(x: torch.Tensor) -> torch.Tensor:  # [T, B, h, N, d] -> [T/c, B, h, c*N, d]
        x = x.reshape(T // c, c, B, h, N, d).permute(0, 2, 3, 1, 4, 5)  # [T/c, B, h, c, N, d]
        return x.reshape(T // c, B, h, c * N, d)

    out = chunks(q) @ (chunks(k).transpose(-2, -1) @ chunks(v)) * scale  # [T/c, B, h, c*N, d]
    return out.reshape(T // c, B, h, c, N, d).permute(0, 3, 1, 2, 4, 5).reshape(T, B, h, N, d)


def _attend(attn: SSA | SDSA, s: torch.Tensor, *, dvs: bool = False) -> torch.Tensor:
    """The host's spiking Q, K, V of ``s [T, B, N, D]``, split into heads, through the STAtten
    core: ``[T, B, h, N, d]``. ``dvs``: Q, K, V max-pooled over the 3x3 token grid and the
    scale ``1 / (N c)`` (the official DVS mode's ``1 / (H H c)``)."""
    q, k, v = attn.spiking_heads(s, pooled="qkv" if dvs else "")
    scale = 1.0 / (s.shape[2] * attn.chunk_size) if dvs else attn.scale
    return spatial_temporal_attention(q, k, v, chunk_size=attn.chunk_size, scale=scale)


def _check_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"STAtten chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


@ATTENTIONS.register("statten")
class STAtten(SSA):
    """SSA with the spatial-temporal core: ``SN(BN(Linear(SN_0.5(STAtten_c(Q, K, V)))))``.

    ``x [T, B, N, D] -> [T, B, N, D]`` (spikes). ``chunk_size`` (default 2, the paper's CIFAR
    and ImageNet setting at T=4) must divide the model's T; checked at the first forward.
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.125,
                 attn_v_threshold: float = 0.5, qkv_bias: bool = True, chunk_size: int = 2):
        super().__init__(dim, num_heads=num_heads, neuron=neuron, scale=scale,
                         attn_v_threshold=attn_v_threshold, qkv_bias=qkv_bias)
        self.chunk_size = _check_chunk_size(chunk_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn_neuron(self.merge(_attend(self, x)))
        return self.proj_neuron(self.proj(y))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, chunk_size={self.chunk_size}"


@ATTENTIONS.register("statten_sdsa")
class STAttenSDSA(SDSA):
    """SDT's SDSA with the spatial-temporal core (the official STAtten block, static data):
    ``BN(Linear(SN_0.5(STAtten_c(Q, K, V) * s)))`` with ``Q, K, V = SN(BN(Linear(SN(x))))``.

    ``x [T, B, N, D] -> [T, B, N, D]`` (real-valued branch; the host adds the membrane
    shortcut). ``scale`` is applied here (SDSA ignores it); ``chunk_size`` as in
    :class:`STAtten`.

    ``dvs=True`` is the official DVS mode: Q, K, V and the shortcut spikes ``s`` are
    max-pooled over the 3x3 token grid (:func:`~stlib.layers.grid.max3x3`), the scale
    becomes ``1 / (N c)`` (``1 / (H H c)`` on the ``H x H`` grid; ``scale`` is then unused) and
    the attention spikes gate the pooled input: ``Y = SN_0.5(.) ⊙ s_pool + s_pool``.
    """

    def __init__(self, dim: int, *, num_heads: int, neuron: NeuronFactory, scale: float = 0.125,
                 attn_v_threshold: float = 0.5, qkv_bias: bool = False, chunk_size: int = 2,
                 dvs: bool = False):
        super().__init__(dim, num_heads=num_heads, neuron=neuron, scale=scale,
                         attn_v_threshold=attn_v_threshold, qkv_bias=qkv_bias, dvs=dvs)
        self.chunk_size = _check_chunk_size(chunk_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shortcut_neuron(x)
        y = self.attn_neuron(self.merge(_attend(self, s, dvs=self.dvs)))  # spikes, v_th 0.5
        if self.dvs:
            s_pool = grid_max3x3(s)
            y = y * s_pool + s_pool
        return self.proj(y)

    def extra_repr(self) -> str:
        return (f"num_heads={self.num_heads}, scale={self.scale}, chunk_size={self.chunk_size}"
                + (", dvs=True" if self.dvs else ""))
