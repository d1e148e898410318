"""QSD-Transformer, the Quantized Spike-Driven Transformer (Qiu, Yao et al., ICLR 2025).

Paper: "Quantized Spike-driven Transformer" (https://arxiv.org/abs/2501.13492); official code:
bollossom/QSD-Transformer ``classification/models.py`` (``Spiking_vit_MetaFormer``,
``spikformer_8_*_CAFormer``) and ``quan_w.py``, re-implemented from the architecture facts in
shared/reference/MODELS-2.md, section 10, and the official code.

Meta-SpikeFormer's layout and SDSA-3 attention (:mod:`stlib.models.sdt_v2`), changed in four
places:

* **4-bit weights** (``weight_bits=4``): every conv and linear layer, the first conv and the
  classifier included, is LSQ-quantized per output channel
  (:mod:`stlib.layers.quantized`); ``weight_bits=0`` builds the full-precision model;
* **IE-LIF**, the information-enhanced neuron: integer activations in training,
  ``floor(clamp(4x, 0, 4) + 1/2) / 4`` (:class:`~stlib.neurons.MultiSpike` with
  ``v_threshold`` 0.25 and ``round_half_up``), and ``/ 2`` at the attention site
  (``norm=2``); T = 1;
* the attention scale is 0.25 (Meta-SpikeFormer: 0.125);
* each transformer block scales its attention and MLP branches by learned per-channel
  factors initialised to 1e-6 (``layer_scale``).

Not built: the fine-grained distillation from an ANN teacher (a training scheme, not part of
the model), and the official ``ActLSQ`` inside every layer, which returns its input unchanged
(its ``alpha`` and ``zero_point``, 2 x in-channels per layer, are parameters the forward never
reads; the checkpoint loader skips them). Parameters (1000 classes, 4-bit): 8-15M
15,160,432 (the official code counts 15,245,862 with the dead ActLSQ tensors); 8-384
31,403,360 (31,527,302); 8-512 55,442,576 (55,607,830). Logits equal the official code's
(0.0 in float64, all three sizes at 224 px, random weights, step sizes, layer scales and BN
statistics, eval mode). The official README reports 80.3 ImageNet top-1
without naming the size; its training command uses ``spikformer_8_15M_CAFormer``
(``qsd_8_15m``).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..layers.quantized import quantize_weights
from ..neurons import neuron_factory
from ._registry import register_model
from .official_weights import OfficialLayout
from .sdt_v2 import META_SPIKEFORMER_LAYOUT, MetaSpikeFormer, multispike_norm
from .spikformer import NeuronFactory

# the official layer names are Meta-SpikeFormer's (its neurons hold no parameters), plus
# per-layer LSQ step sizes (alpha, init_state: same leaf names here) and the block scales
QSD_LAYOUT = OfficialLayout(
    family="QSD-Transformer",
    repo="bollossom/QSD-Transformer (classification/models.py)",
    rename=(
        (r"block3\.(\d+)\.layer_scale([12])", r"stage3.1.blocks.\1.layer_scale\2"),
        (r"block4\.(\d+)\.layer_scale([12])", r"stage4.1.blocks.\1.layer_scale\2"),
        (r"head\.(alpha|init_state)", r"head.fc.\1"),
        *META_SPIKEFORMER_LAYOUT.rename,
    ),
    unused=(r".+\.act\.(alpha|zero_point|init_state|signed)",),  # ActLSQ: an identity
)


class QSDTransformer(MetaSpikeFormer):
    """QSD-Transformer for static images or pre-encoded input.

    ``x [B, C, H, W]`` (repeated T times; T = 1 by default) or ``[T, B, C, H, W]`` -> logits
    ``[B, classes]``. Size keys as :class:`~stlib.models.sdt_v2.MetaSpikeFormer`.
    ``neuron=None`` is the IE-LIF (``MultiSpike`` at ``v_threshold`` 0.25); its attention
    site counts in halves (``norm=2``). A swapped neuron keeps the attention threshold
    ``attn_v_threshold`` (None: the neuron's own). ``weight_bits`` (4; 0 = full precision)
    quantizes every conv and linear weight; ``layer_scale`` (1e-6) initialises the block
    branch scales. Official checkpoints load by :data:`QSD_LAYOUT`.
    """

    official_layout = QSD_LAYOUT

    def __init__(self, *, T: int = 1, neuron: NeuronFactory | None = None,
                 attn_scale: float = 0.25, attn_v_threshold: float | None = None,
                 weight_bits: int = 4, layer_scale: float = 1e-6, **kwargs: Any):
        if weight_bits < 0:
            raise ValueError(f"weight_bits must be >= 2, or 0 for full precision; got {weight_bits}")
        neuron = neuron or neuron_factory("MultiSpike", T=T, v_threshold=0.25,
                                           round_half_up=True)
        self.layer_scale = layer_scale
        self.weight_bits = weight_bits
        super().__init__(T=T, neuron=neuron, attn_scale=attn_scale,
                         attn_v_threshold=attn_v_threshold, **kwargs)
        if weight_bits:
            quantize_weights(self, weight_bits)

    def build_token_blocks(self, depth: int, dim: int, *, neuron: NeuronFactory,
                           attn_kwargs: dict | None, **block_args) -> nn.ModuleList:
        extras = dict(attn_kwargs or {})
        extras.setdefault("attn_neuron", multispike_norm(neuron, 2.0))  # Multispike_att: counts / 2
        return super().build_token_blocks(depth, dim, neuron=neuron, attn_kwargs=extras,
                                          layer_scale=self.layer_scale, **block_args)


def _create(**kwargs) -> QSDTransformer:
    return QSDTransformer(**kwargs)


@register_model
def qsd_8_15m(**overrides) -> QSDTransformer:
    """QSD-Transformer 8-15M (official ``spikformer_8_15M_CAFormer``, the README's training
    command), ImageNet, widths 64/128/256/360, 4-bit: 15,160,432 parameters."""
    return _create(**{"embed_dim": 256, "last_dim": 360, "depth": 8, "num_heads": 8, **overrides})


@register_model
def qsd_8_384(**overrides) -> QSDTransformer:
    """QSD-Transformer 8-384 (official ``spikformer_8_384_CAFormer``), ImageNet, widths
    96/192/384/480, 4-bit: 31,403,360 parameters."""
    return _create(**{"embed_dim": 384, "last_dim": 480, "depth": 8, "num_heads": 8, **overrides})


@register_model
def qsd_8_512(**overrides) -> QSDTransformer:
    """QSD-Transformer 8-512 (official ``spikformer_8_512_CAFormer``), ImageNet, widths
    128/256/512/640, 4-bit: 55,442,576 parameters."""
    return _create(**{"embed_dim": 512, "last_dim": 640, "depth": 8, "num_heads": 8, **overrides})


@register_model
def qsd_8_15m_cifar(**overrides) -> QSDTransformer:
    """QSD-Transformer 15M widths on CIFAR (the paper's CIFAR results are transfer from
    ImageNet; this from-scratch config is stlib's choice): strides (1, 1, 2, 2, 1), 10 classes."""
    return _create(**{"embed_dim": 256, "last_dim": 360, "depth": 8, "num_heads": 8,
                      "img_size": 32, "num_classes": 10, "strides": (1, 1, 2, 2, 1), **overrides})
