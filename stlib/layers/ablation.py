"""Meta-transformer ablation switches (STEP's "component test"): random attention and the
patch-embedding variants. Which switch fits which host model is the models' business
(:mod:`stlib.models.ablation`); a layer knows nothing of the models above it.

Attention (registered in :data:`stlib.layers.attention.ATTENTIONS`, selected with ``attn=``):

* ``random_ssa`` (Spikformer host) and ``random_sdsa`` (SDT host): the host's attention with
  the Q and K projections (their Linear weight and bias) frozen at their random init
  (``requires_grad=False``); the BN after them, V, the output projection and every neuron
  still train. STEP's ``random_attn``: Q and K are fixed random projections followed by a
  learnable BN. :func:`ablation_kwargs` maps the notebook label ``random_attn`` to the one
  matching the host.
* ``random_emsa`` (Spikformer+SEMM host): EMSA with the stacked query-expert projection
  (``attn.q``, the E expert queries) and the shared K projection frozen; the router, V, the
  output projection, every BN and every neuron still train.
* the ANN ViT's ``attn="random_softmax"`` (not a registered attention: timm's fused qkv is
  split, see :class:`stlib.models.vit.SplitQKV`).

Embedding (registry :data:`EMBEDDINGS`, selected with ``embed=`` on Spikformer, SDT,
Spikformer+SEMM and the ANN ViT (built with ReLU neurons); the three spiking hosts also take
``embed="sequence"``, outside this registry), each
``[T, B, C, H, W] -> tokens [T, B, N, D]`` on the same ``N`` as the host's native embedding:

* ``sps``: the host's own tokenizer (Spikformer's 4-conv SPS, SDT's MS-SPS); the default.
* ``sps_2conv`` (alias ``conv2_embed``): :class:`Conv2Embed`.
* ``sps_1conv`` (alias ``vit_embed``): :class:`PatchifyEmbed`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..registry import Registry
from .attention import ATTENTIONS, SSA
from .multistep import ConvBN, seq_to_batch
from .semm import EMSA
from .spike_driven import SDSA

NeuronFactory = Callable[..., nn.Module]


def freeze_qk(attn: nn.Module) -> nn.Module:
    """Freeze the Linear of ``attn.q`` and ``attn.k`` (weight and bias) at their current values.

    Their BN (``attn.q.bn``, ``attn.k.bn``) stays trainable, as in STEP's random_attn.
    """
    for proj in (attn.q, attn.k):
        proj.linear.requires_grad_(False)
    return attn


@ATTENTIONS.register("random_ssa")
class RandomSSA(SSA):
    """Spikformer's SSA with random, frozen Q/K projections (STEP ``random_ssa``).

    ``Q = SN(BN(W_q x + b_q))``, ``K = SN(BN(W_k x + b_k))`` with ``W_q, b_q, W_k, b_k`` kept
    at their init (the host's trunc_normal(0.02) weight, zero bias); the rest is
    :class:`~stlib.layers.attention.SSA` (Eq. 9-10). ``x [T, B, N, D] -> [T, B, N, D]``.
    """

    def __init__(self, dim: int, **kwargs: Any):
        super().__init__(dim, **kwargs)
        freeze_qk(self)


@ATTENTIONS.register("random_sdsa")
class RandomSDSA(SDSA):
    """SDT's SDSA with random, frozen Q/K projections (STEP ``random_sdsa``; the official
    bias-free 1x1 convs are Linear layers here, kept at torch's default init).

    ``Q ⊙ SN_0.5(SUM_N(K ⊙ V))`` as :class:`~stlib.layers.spike_driven.SDSA` (Eq. 13-14).
    ``x [T, B, N, D] -> [T, B, N, D]``.
    """

    def __init__(self, dim: int, **kwargs: Any):
        super().__init__(dim, **kwargs)
        freeze_qk(self)


@ATTENTIONS.register("random_emsa")
class RandomEMSA(EMSA):
    """Spikformer+SEMM's EMSA with random, frozen query-expert and K projections (STEP's
    ``random_attn`` on SEMM: "the Q and K projections" of shared/reference/STEP.md, here the E
    stacked expert queries ``attn.q`` and the shared key ``attn.k``, Linear weight and bias, at
    Spikformer's trunc_normal(0.02) init). The router projection is not a Q/K projection and
    stays trainable, as do V, the output projection, every BN and neuron.

    ``Y = sum_i R_i * SN_attn(Q_i K^T V * s)`` as :class:`~stlib.layers.semm.EMSA`.
    ``x [T, B, N, D] -> [T, B, N, D]``.
    """

    def __init__(self, dim: int, **kwargs: Any):
        super().__init__(dim, **kwargs)
        freeze_qk(self)


class Conv2Embed(nn.Module):
    """STEP ``conv2_embed`` / ``sps_2conv``: two ``Conv3x3-BN-SN-MaxPool(3, 2, 1)`` stages
    (widths D/2, D), then SPS's relative position embedding ``x = x + SN(BN(Conv3x3(x)))``.

    The two poolings give the downsampling of the host's native SPS only where that is 4
    (CIFAR: 32 -> 8, N = 64; the quick preset's 8x8 digits: 8 -> 2); other hosts' pooling
    (ImageNet's 16) is refused with a ValueError.

    ``x [T, B, C_in, H, W] -> tokens [T, B, N, D]`` (values in {0, 1, 2}).
    """

    def __init__(self, *, img_size: int, in_chans: int, embed_dim: int, neuron: NeuronFactory,
                 stride: int = 4):
        super().__init__()
        if stride != 4 or img_size % 4:
            raise ValueError(f"conv2_embed downsamples by 4 (two max-pools); the host needs "
                             f"{stride} on a {img_size}x{img_size} image")
        widths = [embed_dim // 2, embed_dim]
        self.stages = nn.ModuleList(ConvBN(i, o) for i, o in zip([in_chans, widths[0]], widths))
        self.neurons = nn.ModuleList(neuron() for _ in widths)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.rpe = ConvBN(embed_dim, embed_dim)
        self.rpe_neuron = neuron()
        self.grid = img_size // 4
        self.num_patches = self.grid ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv_bn, sn in zip(self.stages, self.neurons):
            x = seq_to_batch(self.pool, sn(conv_bn(x)))
        x = x + self.rpe_neuron(self.rpe(x))  # [T, B, D, H', W']
        return x.flatten(3).transpose(2, 3).contiguous()  # [T, B, N, D]


class PatchifyEmbed(nn.Module):
    """STEP ``vit_embed`` / ``sps_1conv``: one patchify ``Conv(k = stride = patch)`` plus a
    learnable position embedding ``P`` ([1, N, D], trunc_normal(0.02)), no RPE:
    ``tokens = BN(Conv_patch(SN_in(x))) + P``.

    ``input_neuron`` (the Spikformer host, as in STEP) spikes the image first; SDT feeds the
    analog image. ``patch`` is the host's native downsampling, so N is the native N.
    The BN after the conv is this re-implementation's choice (every other conv here has one).

    ``x [T, B, C_in, H, W] -> tokens [T, B, N, D]`` (real-valued).
    """

    def __init__(self, *, img_size: int, in_chans: int, embed_dim: int, neuron: NeuronFactory,
                 stride: int, input_neuron: bool):
        super().__init__()
        if img_size % stride:
            raise ValueError(f"image size {img_size} is not divisible by the patch size {stride}")
        self.input_neuron = neuron() if input_neuron else nn.Identity()
        self.proj = ConvBN(in_chans, embed_dim, kernel_size=stride, stride=stride, padding=0)
        self.grid = img_size // stride
        self.num_patches = self.grid ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.input_neuron(x))  # [T, B, D, H', W']
        return x.flatten(3).transpose(2, 3) + self.pos_embed  # [T, B, N, D]


#: name -> builder ``(*, img_size, in_chans, embed_dim, pool_stages, neuron, native, host)``;
#: ``native`` is the host's own tokenizer class, ``host`` "spikformer", "sdt" or "vit" (the
#: ANN, whose ``neuron`` is ReLU).
EMBEDDINGS: Registry[Callable[..., nn.Module]] = Registry("embedding")


def _stride(pool_stages: Sequence[bool]) -> int:
    return 2 ** sum(bool(p) for p in pool_stages)


@EMBEDDINGS.register("sps")
def _native(*, img_size, in_chans, embed_dim, pool_stages, neuron, native, host) -> nn.Module:
    return native(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim,
                  pool_stages=pool_stages, neuron=neuron)


@EMBEDDINGS.register("sps_2conv", aliases=["conv2_embed"])
def _conv2(*, img_size, in_chans, embed_dim, pool_stages, neuron, native, host) -> nn.Module:
    return Conv2Embed(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim, neuron=neuron,
                      stride=_stride(pool_stages))


@EMBEDDINGS.register("sps_1conv", aliases=["vit_embed"])
def _patchify(*, img_size, in_chans, embed_dim, pool_stages, neuron, native, host) -> nn.Module:
    return PatchifyEmbed(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim,
                         neuron=neuron, stride=_stride(pool_stages),
                         input_neuron=host == "spikformer")


def build_embedding(name: str, *, host: str, native: type[nn.Module], img_size: int,
                    in_chans: int, embed_dim: int, pool_stages: Sequence[bool],
                    neuron: NeuronFactory) -> nn.Module:
    """The tokenizer ``name`` (see :data:`EMBEDDINGS`; an unknown name is an
    :class:`~stlib.registry.UnknownNameError` listing the valid ones) for ``host``."""
    return EMBEDDINGS.get(name)(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim,
                                pool_stages=pool_stages, neuron=neuron, native=native, host=host)
