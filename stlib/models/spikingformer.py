"""Spikingformer: spike-driven residual learning for transformer-based SNNs (Zhou et al.,
arXiv 2304.11954).

Official code: zhouchenlin2096/Spikingformer (re-implemented from the architecture facts in
shared/reference/MODELS-1.md, section 2).

Spikformer with every neuron moved *before* its conv/linear (pre-activation), so each
conv/linear sees spikes and the residuals add real-valued BN outputs::

    image -> (repeat T) -> Spiking Tokenizer [conv0-BN, 4 x (SN-[pool]-conv-BN)]
          -> L x [x + BN(Linear(SN_0.5((QK^T)V * s))) with Q,K,V = SN(BN(Linear(SN(x)))),
                  x + BN(Linear(SN(BN(Linear(SN(x))))))]
          -> mean over tokens -> Linear -> mean over T -> logits

Quirks of the official code: each block builds two ``nn.LayerNorm`` that are never used
(6,144 parameters at 4-384), and ``drop_path_rate`` is passed but DropPath is never applied.
Neither is built, so Spikingformer-4-384 (10 classes) has 9,320,122 parameters (the paper's
9.32M; the official code counts 9,326,266). The official 1x1 Conv1d layers are Linear layers
here (same parameters, same default init); only the head gets trunc_normal(0.02).
"""
from __future__ import annotations

from typing import Sequence


from ..layers.grid import fit_pools
from ..layers import MeanTokenHead
from ..layers.spike_driven import PreActMLP, PreActSPS
from ._registry import register_model
from .official_weights import OfficialLayout, PublishedCheckpoint
from .spikformer import (BLOCK_RENAME, UNUSED_LAYER_NORMS, NeuronFactory, TokenTransformer,
                         _init_weights, build_blocks)


# zhouchenlin2096/Spikingformer: the CIFAR tokenizer names its convs block0..block4, the
# ImageNet one proj, proj1..proj4; block 0 is the stem (no neuron before it).
SPIKINGFORMER_LAYOUT = OfficialLayout(
    family="Spikingformer", repo="zhouchenlin2096/Spikingformer (cifar10/, imagenet/model.py)",
    rename=(
        (r"patch_embed\.(?:block0|proj)_(conv|bn)\.(.+)", r"patch_embed.stem.\1.\2"),
        *((rf"patch_embed\.(?:block|proj){i + 1}_(conv|bn)\.(.+)", rf"patch_embed.stages.{i}.\1.\2")
          for i in range(4)),
        *BLOCK_RENAME,
    ),
    unused=(UNUSED_LAYER_NORMS,),
    checkpoints={
        "spikingformer_8_768": PublishedCheckpoint(
            "https://pan.baidu.com/s/1LsECpFOxh30O3vHWow8OGQ (password abcd)", "imagenet",
            75.85),
        "spikingformer_4_384": PublishedCheckpoint(
            "https://pan.baidu.com/s/1mjpD2gtz5ZX0M8N3jobjzA (password abcd)", "cifar10",
            95.81, "the 4-384-400E run"),
    },
)


class Spikingformer(TokenTransformer):
    """Spikingformer for static images or pre-encoded input.

    ``x [B, C, H, W]`` (direct encoding: repeated T times) or ``[T, B, C, H, W]`` -> logits
    ``[B, classes]`` (mean over T), or ``[T, B, classes]`` with ``per_step_logits=True``.
    ``attn`` names a pre-activation attention in :data:`stlib.layers.ATTENTIONS`
    (default ``"ssa_preact"``: Spikingformer's SSA).

    Official checkpoints load by :data:`SPIKINGFORMER_LAYOUT` (the unused per-block
    LayerNorms are skipped).
    """

    official_layout = SPIKINGFORMER_LAYOUT

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 4, num_heads: int = 12,
                 mlp_ratio: float = 4.0, T: int = 4,
                 pool_stages: Sequence[bool] = (False, False, True, True),
                 attn: str = "ssa_preact", attn_scale: float = 0.125,
                 attn_v_threshold: float = 0.5, neuron: NeuronFactory | None = None,
                 per_step_logits: bool = False):
        super().__init__()
        neuron = self.setup(T=T, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                            embed_dim=embed_dim, neuron=neuron)
        # images too small for the pooling keep its last poolings (quick preset: 8 -> 2)
        self.pool_stages = fit_pools(img_size, pool_stages)
        self.patch_embed = PreActSPS(img_size=img_size, in_chans=in_chans, embed_dim=embed_dim,
                                     pool_stages=self.pool_stages, neuron=neuron)
        self.blocks = build_blocks(depth, embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                   neuron=neuron, attn=attn, attn_kwargs=None,
                                   attn_scale=attn_scale, attn_v_threshold=attn_v_threshold,
                                   mlp_layer=PreActMLP)
        self.head = MeanTokenHead(embed_dim, num_classes, per_step=per_step_logits)
        self.head.apply(_init_weights)  # trunc_normal(0.02) on the head; convs keep torch's init


def _create_spikingformer(**kwargs) -> Spikingformer:
    return Spikingformer(**kwargs)


@register_model
def spikingformer_4_384(**overrides) -> Spikingformer:
    """Spikingformer-4-384, CIFAR (32x32, 12 heads): 9,320,122 parameters at 10 classes."""
    arch = dict(depth=4, embed_dim=384, num_heads=12)
    return _create_spikingformer(**{**arch, **overrides})


@register_model
def spikingformer_8_768(**overrides) -> Spikingformer:
    """Spikingformer-8-768, ImageNet (224, pool before every tokenizer conv -> 14x14, 8 heads
    as in the official imagenet/imagenet.yml that trained the released 75.85 % model):
    66,338,632 parameters at 1000 classes."""
    arch = dict(depth=8, embed_dim=768, num_heads=8, img_size=224, num_classes=1000,
                pool_stages=(True, True, True, True))
    return _create_spikingformer(**{**arch, **overrides})
