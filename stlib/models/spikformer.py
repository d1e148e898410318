"""Spikformer: When Spiking Neural Network Meets Transformer (Zhou et al., ICLR 2023).

Paper: https://arxiv.org/abs/2209.15425 ; official code: ZK-Zhou/spikformer (re-implemented
from the architecture facts in shared/reference/MODELS-1.md, section 1).

Figure 2 of the paper, top to bottom::

    image -> (direct encoding: repeat T) -> SPS (4 conv stages + RPE) -> L x [SSA + MLP]
          -> mean over tokens -> Linear -> mean over T -> logits

Quirk of the official code: every block builds two ``nn.LayerNorm`` that are never used
(6,144 parameters at 4-384). They are not built here, so Spikformer-4-384 for 10 classes has
9,324,730 parameters (the paper's "9.32M"; the official code counts 9,330,874).

Other official configs (``imagenet/model.py``, ``cifar10dvs/model.py``): the SPS pools after
every stage (224 -> 14, N = 196; DVS 128 -> 8, N = 64) and q/k/v have no bias
(``qkv_bias=False``; the official 1x1 Conv1d layout has the same parameters as Linear).
ImageNet computes ``Q (K^T V)``, the same product. DVS uses scale 0.25 and 16 heads; its
unused ``pos_embed`` (1 x 64 x 256) and LayerNorms are not built, so the DVS model has the
paper's 2,566,666 parameters (the official code: 2,585,610).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..layers import SPS, MeanTokenHead, SpikingBlock, SpikingMLP, get_attention
from ..layers.ablation import EMBEDDINGS, build_embedding
from ..layers.grid import fit_pools
from ..layers.init import trunc_normal_linear_init as _init_weights  # the official init
from ..layers.input_check import to_time_major
from ..layers.sequence import SequenceEmbed, sequence_time_major
from ..registry import UnknownNameError, init_keywords
from ._registry import register_model
from .official_weights import OfficialLayout

NeuronFactory = Callable[..., nn.Module]


def default_neuron(T: int) -> NeuronFactory:
    """The papers' neuron: spikingjelly ``MultiStepLIFNode(tau=2.0, detach_reset=True)``."""
    from ..neurons import neuron_factory

    return neuron_factory("LIF", T=T, detach_reset=True)


def build_blocks(depth: int, dim: int, *, num_heads: int, mlp_ratio: float,
                 neuron: NeuronFactory, attn: str | type[nn.Module],
                 attn_kwargs: dict[str, Any] | None, attn_scale: float, attn_v_threshold: float,
                 mlp_layer: Callable[..., nn.Module],
                 conv_layer: Callable[..., nn.Module] | None = None,
                 layer_scale: float | None = None) -> nn.ModuleList:
    """``depth`` x ``SpikingBlock(attn, mlp)`` on tokens ``[T, B, N, dim]``.

    ``attn`` is looked up in :data:`stlib.layers.ATTENTIONS` and called as
    ``attn(dim, num_heads=, neuron=, scale=, attn_v_threshold=, **attn_kwargs)``: a plugged-in
    attention's own extras (STAtten's ``chunk_size``) ride in ``attn_kwargs``.
    ``mlp_layer(dim, hidden, neuron=)`` builds the MLP (hidden = ``mlp_ratio * dim``), and
    ``conv_layer(dim, neuron=)``, when given, a conv token mixer before the attention;
    ``layer_scale`` gives every block learned branch scales (QSD).
    """
    attn_cls = get_attention(attn)
    _check_attention_extras(attn_cls, attn_kwargs or {})
    attn_layer = functools.partial(attn_cls, **(attn_kwargs or {}))
    return nn.ModuleList(
        SpikingBlock(
            attn=attn_layer(dim, num_heads=num_heads, neuron=neuron, scale=attn_scale,
                            attn_v_threshold=attn_v_threshold),
            mlp=mlp_layer(dim, int(dim * mlp_ratio), neuron=neuron),
            conv=conv_layer(dim, neuron=neuron) if conv_layer is not None else None,
            layer_scale=layer_scale, dim=dim,
        )
        for _ in range(depth)
    )


_HOST_ARGUMENTS = {"self", "dim", "num_heads", "neuron", "scale", "attn_v_threshold"}


def _check_attention_extras(attn_cls: type[nn.Module], attn_kwargs: dict[str, Any]) -> None:
    """Refuse an ``attn_kwargs`` key the attention does not take, naming the ones it does
    (e.g. ``dvs`` from an SDT DVS config reaching Spikformer's SSA)."""
    extras = sorted(init_keywords(attn_cls) - _HOST_ARGUMENTS)
    unknown = sorted(set(attn_kwargs) - set(extras))
    if unknown:
        raise ValueError(f"attention {attn_cls.__name__} does not take attn_kwargs "
                         f"{', '.join(map(repr, unknown))}; it takes: "
                         f"{', '.join(extras) or 'none'}")


class TokenTransformer(nn.Module):
    """Shared plumbing of the Spikformer-family models (Spikformer, Spikingformer, SDT v1, and
    Meta-SpikeFormer): direct encoding, input checks, ``patch_embed -> blocks -> head``.

    A subclass calls :meth:`setup` first, then builds ``patch_embed`` (``[T, B, C, H, W] ->
    [T, B, N, D]``), ``blocks`` (each with ``mlp.input``, the Grad-CAM target) and ``head``;
    hierarchical models override ``forward_features`` and ``cam_target_layer``.
    """

    T: int
    img_size: int
    in_chans: int

    def setup(self, *, T: int, img_size: int, in_chans: int, num_classes: int, embed_dim: int,
              neuron: NeuronFactory | None) -> NeuronFactory:
        """Check T, keep the input geometry, and return the neuron factory (None: the papers'
        LIF). Called first by every subclass ``__init__``."""
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.neuron = neuron or default_neuron(T)
        return self.neuron

    def build_tokenizer(self, embed: str, *, host: str, native: type[nn.Module],
                        pool_stages: Sequence[bool], neuron: NeuronFactory) -> nn.Module:
        """The tokenizer named ``embed`` (after :meth:`setup`): ``"sequence"`` is
        :class:`~stlib.layers.sequence.SequenceEmbed` (``img_size`` is then the sequence length
        L, input ``[B, C, L]``), any other name one of
        :data:`stlib.layers.ablation.EMBEDDINGS` built for ``host`` (``"sps"``: ``native``).
        Sets ``self.embed`` (read by :meth:`to_sequence`) and ``self.pool_stages``."""
        if embed != "sequence" and embed not in EMBEDDINGS:
            raise UnknownNameError(f"{type(self).__name__} embed ('sequence' for sequential "
                                   "images, else an image tokenizer)", embed,
                                   ["sequence", *EMBEDDINGS.valid_names()])
        self.embed = embed
        if embed == "sequence":
            self.pool_stages = tuple(pool_stages)
            return SequenceEmbed(seq_len=self.img_size, in_chans=self.in_chans,
                                 embed_dim=self.embed_dim, neuron=neuron)
        # images too small for the pooling keep its last poolings (quick preset: 8 -> 2)
        self.pool_stages = fit_pools(self.img_size, pool_stages)
        return build_embedding(embed, host=host, native=native, img_size=self.img_size,
                               in_chans=self.in_chans, embed_dim=self.embed_dim,
                               pool_stages=self.pool_stages, neuron=neuron)

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Images: ``[B, C, H, W]`` -> ``[T, B, C, H, W]`` (direct encoding; 5-D input is
        checked). Sequences (``embed="sequence"``): ``[B, C, L]`` repeated over T, checked
        against ``(in_chans, img_size = L)``."""
        if getattr(self, "embed", None) == "sequence":
            return sequence_time_major(x, T=self.T, in_chans=self.in_chans, length=self.img_size,
                                       model=type(self).__name__)
        return to_time_major(x, T=self.T, in_chans=self.in_chans, img_size=self.img_size,
                             model=type(self).__name__)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.to_sequence(x))  # [T, B, N, D]
        for block in self.blocks:
            x = block(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def cam_target_layer(self) -> nn.Module:
        """Grad-CAM's default target: the input of the last block's MLP (tokens [T, B, N, D])."""
        return self.blocks[-1].mlp.input


# Official key names shared by the Spikformer-family files (Spikformer, Spikingformer, SDT v1,
# STAtten): ``block.i.attn.{q,k,v,proj}_{linear|conv,bn}`` and ``block.i.mlp.{fc|mlp}{1,2}_*``.
# CIFAR Spikformer uses nn.Linear (``q_linear``), the other files 1x1 convs (``q_conv``) of the
# same parameters; ``load_official`` reshapes those.
BLOCK_RENAME = (
    (r"block\.(\d+)\.attn\.(q|k|v|proj)_(?:linear|conv)\.(.+)", r"blocks.\1.attn.\2.linear.\3"),
    (r"block\.(\d+)\.attn\.(q|k|v|proj)_bn\.(.+)", r"blocks.\1.attn.\2.bn.\3"),
    (r"block\.(\d+)\.mlp\.(?:fc|mlp)([12])_(?:linear|conv)\.(.+)", r"blocks.\1.mlp.fc\2.linear.\3"),
    (r"block\.(\d+)\.mlp\.(?:fc|mlp)([12])_bn\.(.+)", r"blocks.\1.mlp.fc\2.bn.\3"),
    (r"head\.(weight|bias)", r"head.fc.\1"),
)
# the SPS of Spikformer and SDT v1: proj_conv, proj_conv1..3, rpe_conv (each with its BN)
SPS_RENAME = (
    (r"patch_embed\.proj_(conv|bn)\.(.+)", r"patch_embed.stages.0.\1.\2"),
    (r"patch_embed\.proj_(conv|bn)([1-3])\.(.+)", r"patch_embed.stages.\2.\1.\3"),
    (r"patch_embed\.rpe_(conv|bn)\.(.+)", r"patch_embed.rpe.\1.\2"),
)
UNUSED_LAYER_NORMS = r"block\.\d+\.norm[12]\.(weight|bias)"
SPIKFORMER_LAYOUT = OfficialLayout(
    family="Spikformer", repo="ZK-Zhou/spikformer (cifar10/, imagenet/, cifar10dvs/model.py)",
    rename=SPS_RENAME + BLOCK_RENAME,
    # built by the official code, never read by its forward
    unused=(UNUSED_LAYER_NORMS, r"pos_embed", r"norm\.(weight|bias)"),
)


class Spikformer(TokenTransformer):
    """Spikformer for static images or pre-encoded input (event frames included).

    ``attn`` names the attention in :data:`stlib.layers.ATTENTIONS` (``"ssa"``; any class
    taking ``(dim, *, num_heads, neuron, scale, attn_v_threshold)`` plugs in);
    ``qkv_bias=False`` is passed on to it only when set (the ImageNet and DVS models), and
    ``attn_kwargs`` carries an attention's own extra arguments. ``embed`` names the tokenizer
    in :data:`stlib.layers.ablation.EMBEDDINGS` (``"sps"``, the default; ``"sps_2conv"``,
    ``"sps_1conv"`` and their aliases are the meta-transformer ablation's; ``"sequence"`` for
    sequential images). An image too small for ``pool_stages`` keeps only the last poolings
    (:func:`stlib.layers.grid.fit_pools`: the ImageNet / DVS configs on the quick preset's 8x8
    digits pool 8 -> 2 like CIFAR).

    ``x [B, C, H, W]`` (repeated over T: direct encoding) or ``[T, B, C, H, W]`` (an encoder's
    output) -> logits ``[B, classes]`` (the mean over T), or ``[T, B, classes]`` with
    ``per_step_logits=True``.

    Official checkpoints (``load_official`` / ``create_model(..., pretrained=PATH)``) load by
    :data:`SPIKFORMER_LAYOUT`; the unused LayerNorms (``block.i.norm1/norm2``, DVS ``norm``)
    and the DVS ``pos_embed`` are skipped.
    """

    ablation_host = "spikformer"  # takes the switches of stlib.models.ablation

    official_layout = SPIKFORMER_LAYOUT

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 4, num_heads: int = 12,
                 mlp_ratio: float = 4.0, T: int = 4,
                 pool_stages: Sequence[bool] = (False, False, True, True),
                 attn: str = "ssa", attn_scale: float = 0.125, attn_v_threshold: float = 0.5,
                 qkv_bias: bool = True, attn_kwargs: dict[str, Any] | None = None,
                 embed: str = "sps",
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        neuron = self.setup(T=T, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                            embed_dim=embed_dim, neuron=neuron)
        # "sps": the native SPS; "sequence": the Conv1d sequence tokenizer (TokenTransformer)
        self.patch_embed = self.build_tokenizer(embed, host="spikformer", native=SPS,
                                                pool_stages=pool_stages, neuron=neuron)
        # qkv_bias is passed only when off, so attentions without the option still plug in
        attn_kwargs = {**({} if qkv_bias else {"qkv_bias": False}), **(attn_kwargs or {})}
        self.blocks = build_blocks(depth, embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                   neuron=neuron, attn=attn, attn_kwargs=attn_kwargs,
                                   attn_scale=attn_scale, attn_v_threshold=attn_v_threshold,
                                   mlp_layer=SpikingMLP)
        self.head = MeanTokenHead(embed_dim, num_classes, per_step=per_step_logits)
        self.apply(_init_weights)


def _create_spikformer(**kwargs) -> Spikformer:
    return Spikformer(**kwargs)


@register_model
def spikformer_4_384(**overrides) -> Spikformer:
    """Spikformer-4-384, CIFAR (32x32, patch 4, 12 heads): 9,324,730 parameters at 10 classes."""
    arch = dict(depth=4, embed_dim=384, num_heads=12)
    return _create_spikformer(**{**arch, **overrides})


@register_model
def spikformer_4_256(**overrides) -> Spikformer:
    """Spikformer-4-256, CIFAR (16 heads)."""
    arch = dict(depth=4, embed_dim=256, num_heads=16)
    return _create_spikformer(**{**arch, **overrides})


@register_model
def spikformer_2_384(**overrides) -> Spikformer:
    """Spikformer-2-384, CIFAR (12 heads)."""
    arch = dict(depth=2, embed_dim=384, num_heads=12)
    return _create_spikformer(**{**arch, **overrides})


@register_model
def spikformer_8_384(**overrides) -> Spikformer:
    """Spikformer-8-384, ImageNet (224, pools after every SPS stage -> 14x14, 12 heads, q/k/v
    without bias): 16,816,024 parameters at 1000 classes."""
    arch = dict(depth=8, embed_dim=384, num_heads=12, img_size=224, num_classes=1000,
                pool_stages=(True, True, True, True), qkv_bias=False)
    return _create_spikformer(**{**arch, **overrides})


@register_model
def spikformer_8_768(**overrides) -> Spikformer:
    """Spikformer-8-768, ImageNet (224 -> 14x14, 12 heads, q/k/v without bias): 66,338,632
    parameters at 1000 classes."""
    arch = dict(depth=8, embed_dim=768, num_heads=12, img_size=224, num_classes=1000,
                pool_stages=(True, True, True, True), qkv_bias=False)
    return _create_spikformer(**{**arch, **overrides})


@register_model
def spikformer_dvs_2_256(**overrides) -> Spikformer:
    """Spikformer-2-256 for event frames (CIFAR10-DVS: ``[T=16, B, 2, 128, 128]``, pools after
    every SPS stage -> 8x8, 16 heads, scale 0.25, q/k/v without bias): 2,566,666 parameters."""
    arch = dict(depth=2, embed_dim=256, num_heads=16, img_size=128, in_chans=2, T=16,
                pool_stages=(True, True, True, True), attn_scale=0.25, qkv_bias=False)
    return _create_spikformer(**{**arch, **overrides})
