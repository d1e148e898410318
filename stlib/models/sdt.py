"""Spike-driven Transformer (SDT v1; Yao et al., NeurIPS 2023).

Paper: https://arxiv.org/abs/2307.01694 ; official code: BICLab/Spike-Driven-Transformer
(re-implemented from the architecture facts in shared/reference/MODELS-1.md, section 3).

Every conv/linear sees spikes; residuals ("membrane shortcuts") add real values::

    image -> (repeat T) -> MS_SPS (conv-BN-SN-[pool] x3, conv-BN-[pool], x + BN(conv(SN(x))))
          -> L x [x + SDSA(x), x + MLP(x)]    SDSA = BN(Linear(Q ⊙ SN_0.5(SUM_N(K ⊙ V))))
          -> mean over tokens -> SN -> Linear -> mean over T -> logits

Spike modes (``--spike-mode`` of the official code and of the neuron-swap fork
mintii13/Investigating-Spiking-Neural-Models) are just the neuron type: ``neuron="LIF"``,
``"IF"`` (hard reset) or ``"IFSoft"`` replaces every neuron (tokenizer, shortcut, q/k/v, MLP,
head) while the talking-heads neuron keeps v_th 0.5 (built with ``neuron(v_threshold=...)``).

The attention is chosen by name from ``stlib.layers.ATTENTIONS`` (``attn="sdsa"``; STAtten on
this host is ``attn="statten_sdsa", attn_kwargs={"chunk_size": 2}``; ``"sdsa_3"`` is
Meta-SpikeFormer's RepConv attention).

Quirks of the official code: a ``talking_heads`` Conv1d(h, h) per block (64 parameters at
h = 8) is created and never used, so it is not built: 2-512 has 10,233,418 parameters at 10
classes (official 10,233,546) and 10,279,588 at 100 (official 10,279,716; the paper's
10.28M). ``self.scale = 0.125`` is defined but never applied, and DropPath is never applied.
The 1x1 convs are Linear layers here (same parameters and default init); only the head gets
trunc_normal(0.02). The DVS-only "Erode" max-pooling is SDSA's ``dvs=True``
(``attn_kwargs={"dvs": True}``, on in the DVS params files).
"""
from __future__ import annotations

from typing import Any, Sequence


from ..layers.spike_driven import MSSPS, PreActMLP, SpikingTokenHead
from ._registry import register_model
from .official_weights import OfficialLayout, PublishedCheckpoint
from .spikformer import (BLOCK_RENAME, SPS_RENAME, NeuronFactory, TokenTransformer, _init_weights,
                         build_blocks)


_SDT_DRIVE = "https://drive.google.com/file/d/{}/view"
# BICLab/Spike-Driven-Transformer (model/spikeformer.py, module/ms_conv.py, module/sps.py); its
# copy Intelligent-Computing-Lab-Yale/STAtten saves the same keys (STAtten's core has no
# parameters of its own), so an STAtten checkpoint loads into ``attn="statten_sdsa"``.
SDT_LAYOUT = OfficialLayout(
    family="SDT v1", repo="BICLab/Spike-Driven-Transformer (also Intelligent-Computing-Lab-Yale/STAtten)",
    rename=SPS_RENAME + BLOCK_RENAME,
    unused=(r"block\.\d+\.attn\.talking_heads\.weight",),  # built, never called
    checkpoints={  # README of the official repository: ImageNet-1k, T=4, 224x224
        "sdt_8_384": PublishedCheckpoint(_SDT_DRIVE.format("10oH_zkwB4FDtFLgmZ_lI8e0tFjRzrXyD"),
                                         "imagenet", 72.28),
        "sdt_6_512": PublishedCheckpoint(_SDT_DRIVE.format("1hsShpFBKYpMK2TmpuoyBFORcLAuMHrx7"),
                                         "imagenet", 74.11),
        "sdt_8_512": PublishedCheckpoint(_SDT_DRIVE.format("1n59WNSBgP2VyAW2nfJX2Wvx5rgNJEMXI"),
                                         "imagenet", 74.57),
        "sdt_10_512": PublishedCheckpoint(_SDT_DRIVE.format("1l-c3QY5r4IFmYUmGPZXRHP_W7iC1sdP8"),
                                          "imagenet", 74.66),
        "sdt_8_768": PublishedCheckpoint(_SDT_DRIVE.format("1R-MaeFV8d2Y0pIGBSjklOGWhaF8dLHf4"),
                                         "imagenet", 77.07),
    },
)


class SpikeDrivenTransformer(TokenTransformer):
    """SDT v1 for static images or pre-encoded input.

    ``x [B, C, H, W]`` (direct encoding: repeated T times) or ``[T, B, C, H, W]`` -> logits
    ``[B, classes]`` (mean over T of the per-step logits), or ``[T, B, classes]`` with
    ``per_step_logits=True`` (the official TET mode). ``pool_stages`` is the official
    ``pooling_stat`` ("0011" CIFAR, "1111" ImageNet). ``embed`` names the tokenizer in
    :data:`stlib.layers.ablation.EMBEDDINGS` (``"sps"``: the native MS-SPS, the default), or
    ``"sequence"`` for sequential images (STEP's ``sequential_embed``,
    :class:`~stlib.layers.sequence.SequenceEmbed`: ``img_size`` is the sequence length L and
    ``x [B, C, L]`` or ``[T, B, C, L]``).

    Official checkpoints (SDT and STAtten) load by :data:`SDT_LAYOUT`; the unused
    ``talking_heads`` convs are skipped.
    """

    ablation_host = "sdt"  # takes the switches of stlib.models.ablation

    official_layout = SDT_LAYOUT

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 512, depth: int = 2, num_heads: int = 8,
                 mlp_ratio: float = 4.0, T: int = 4,
                 pool_stages: Sequence[bool] = (False, False, True, True),
                 attn: str = "sdsa", attn_scale: float = 0.125, attn_v_threshold: float = 0.5,
                 attn_kwargs: dict[str, Any] | None = None, embed: str = "sps",
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        neuron = self.setup(T=T, img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                            embed_dim=embed_dim, neuron=neuron)
        # "sps": the native MS-SPS; "sequence": the Conv1d sequence tokenizer (TokenTransformer)
        self.patch_embed = self.build_tokenizer(embed, host="sdt", native=MSSPS,
                                                pool_stages=pool_stages, neuron=neuron)
        self.blocks = build_blocks(depth, embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                   neuron=neuron, attn=attn, attn_kwargs=attn_kwargs,
                                   attn_scale=attn_scale, attn_v_threshold=attn_v_threshold,
                                   mlp_layer=PreActMLP)
        self.head = SpikingTokenHead(embed_dim, num_classes, neuron=neuron,
                                     per_step=per_step_logits)
        self.head.apply(_init_weights)  # trunc_normal(0.02) on the head; convs keep torch's init


def _create_sdt(**kwargs) -> SpikeDrivenTransformer:
    return SpikeDrivenTransformer(**kwargs)


@register_model
def sdt_2_512(**overrides) -> SpikeDrivenTransformer:
    """SDT-2-512, CIFAR (32x32, pooling "0011", 8 heads): 10,233,418 parameters at 10 classes."""
    arch = dict(depth=2, embed_dim=512, num_heads=8)
    return _create_sdt(**{**arch, **overrides})


@register_model
def sdt_2_256(**overrides) -> SpikeDrivenTransformer:
    """SDT-2-256, CIFAR (the neuron-swap fork's config): 2,566,954 parameters at 10 classes."""
    arch = dict(depth=2, embed_dim=256, num_heads=8)
    return _create_sdt(**{**arch, **overrides})


def _imagenet_sdt(depth: int, embed_dim: int, overrides: dict) -> SpikeDrivenTransformer:
    arch = dict(depth=depth, embed_dim=embed_dim, num_heads=8, img_size=224, num_classes=1000,
                pool_stages=(True, True, True, True))
    return _create_sdt(**{**arch, **overrides})


@register_model
def sdt_8_384(**overrides) -> SpikeDrivenTransformer:
    """SDT-8-384, ImageNet (224 -> 14x14, 8 heads): 16,816,024 parameters at 1000 classes;
    published checkpoint 72.28 % top-1."""
    return _imagenet_sdt(8, 384, overrides)


@register_model
def sdt_6_512(**overrides) -> SpikeDrivenTransformer:
    """SDT-6-512, ImageNet: 23,373,352 parameters; published checkpoint 74.11 %."""
    return _imagenet_sdt(6, 512, overrides)


@register_model
def sdt_8_512(**overrides) -> SpikeDrivenTransformer:
    """SDT-8-512, ImageNet: 29,689,384 parameters; published checkpoint 74.57 %."""
    return _imagenet_sdt(8, 512, overrides)


@register_model
def sdt_10_512(**overrides) -> SpikeDrivenTransformer:
    """SDT-10-512, ImageNet: 36,005,416 parameters; published checkpoint 74.66 %."""
    return _imagenet_sdt(10, 512, overrides)


@register_model
def sdt_8_768(**overrides) -> SpikeDrivenTransformer:
    """SDT-8-768, ImageNet (224, pooling "1111" -> 14x14, 8 heads): 66,338,632 parameters at
    1000 classes; published checkpoint 77.07 %."""
    return _imagenet_sdt(8, 768, overrides)
