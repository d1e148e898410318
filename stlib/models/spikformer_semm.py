"""Spikformer + SEMM ("Spiking Transformer with Experts Mixture", Zhou et al., NeurIPS 2024).

Paper: https://openreview.net/forum?id=WcIeEtY3AG (NeurIPS 2024); no official code is known.
Re-implemented from the third-party port described in shared/reference/MODELS-1.md section 7
(Fancyssc/SpikingTransformerBenchmark ``cls/models/static/spikf_semm_cifar.py``).

Spikformer with both sub-layers of every block replaced by experts mixtures::

    image -> (repeat T) -> SPS -> L x [x + EMSA(x), x + EMSP(x)] -> mean over tokens
          -> Linear -> mean over T -> logits

SPS, the SEW residual block and the head are Spikformer's (:mod:`stlib.layers`); EMSA and EMSP
are in :mod:`stlib.layers.semm`. Generic keys: ``embed_dim`` D, ``depth`` L; ``num_heads`` is
accepted and not used (the E experts replace the heads, as in the port).

Choices: the port sets every threshold to 1.0 (a BrainCog convention it applies to plain
Spikformer too); here the expert-attention neurons keep Spikformer's 0.5
(``attn_v_threshold=0.5``; pass 1.0 to follow the port). The neuron is the papers' LIF
(tau 2, detach_reset); init is Spikformer's (trunc_normal 0.02 on every Linear).
Spikformer-SEMM-4-384 has 7,739,242 parameters at 10 classes, the port's exact count.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from ..layers import SpikingBlock, get_attention
from ..layers.semm import EMSP
from ..registry import UnknownNameError
from ._registry import register_model
from .official_weights import OfficialLayout
from .spikformer import BLOCK_RENAME, SPS_RENAME, NeuronFactory, Spikformer, _init_weights


#: SEMM's ``attn`` values in :data:`stlib.layers.ATTENTIONS`: the expert attentions, and
#: Meta-SpikeFormer's RepConv attention (STEP's ``sdsa_3`` on SEMM, which has no experts)
EXPERT_ATTENTIONS = ("emsa", "random_emsa")
SEMM_ATTENTIONS = (*EXPERT_ATTENTIONS, "sdsa_3")

_EXPERT = re.compile(r"(block\.\d+\.attn)\.ff_list\.(\d+)\.unit_(linear|bn)\.(.+)")


def _stack_query_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The port's E query experts (``attn.ff_list.<i>.unit_linear`` / ``unit_bn``, each of
    width e) -> one ``attn.q_linear`` / ``attn.q_bn`` of width E * e, expert i in rows
    ``[i e, (i + 1) e)``, as :class:`stlib.layers.semm.EMSA` stacks them."""
    experts: dict[tuple[str, str, str], dict[int, torch.Tensor]] = {}
    out = {}
    for key, value in state.items():
        match = _EXPERT.fullmatch(key)
        if match is None:
            out[key] = value
            continue
        attn, index, part, leaf = match.groups()
        experts.setdefault((attn, part, leaf), {})[int(index)] = value
    for (attn, part, leaf), by_index in experts.items():
        tensors = [by_index[i] for i in sorted(by_index)]
        # one BN counts its batches once: the experts' counters are equal
        out[f"{attn}.q_{part}.{leaf}"] = (tensors[0] if leaf == "num_batches_tracked"
                                         else torch.cat(tensors))
    return out


SEMM_LAYOUT = OfficialLayout(
    family="Spikformer+SEMM", repo="Fancyssc/STEP (cls/models/static/spikf_semm_cifar.py; "
                                   "no official code is known)",
    rename=SPS_RENAME + BLOCK_RENAME + (
        (r"block\.(\d+)\.attn\.router1\.(.+)", r"blocks.\1.attn.router.linear.\2"),
        (r"block\.(\d+)\.attn\.router2\.(.+)", r"blocks.\1.attn.router.bn.\2"),
        (r"block\.(\d+)\.mlp\.dw_conv\.weight", r"blocks.\1.mlp.dwconv.body.0.weight"),
        (r"block\.(\d+)\.mlp\.dw_bn\.(.+)", r"blocks.\1.mlp.dwconv.body.1.\2"),
    ),
    # BrainCog-style neurons store their constant threshold (1.0) and surrogate alpha (4)
    # as frozen parameters: nothing of the function lives there
    unused=(r".+(_lif\d*|lif_list\.\d+|router3)\.(threshold|act_fun\.alpha)",),
    prepare=_stack_query_experts,
)


class SpikformerSEMM(Spikformer):
    """Spikformer with expert-mixture attention (EMSA) and MLP (EMSP).

    ``x [B, C, H, W]`` (repeated over T) or ``[T, B, C, H, W]`` -> logits ``[B, classes]``, or
    ``[T, B, classes]`` with ``per_step_logits=True``. ``expert_dim=None`` means D / 4.

    Meta-transformer switches (STEP's component test): ``attn`` names the expert attention in
    :data:`stlib.layers.ATTENTIONS`, ``"emsa"`` or ``"random_emsa"`` (STEP's ``random_attn``
    for SEMM: the E query-expert and the K projections frozen at their init,
    :class:`stlib.layers.ablation.RandomEMSA`), or ``"sdsa_3"``: STEP's component test swaps
    SEMM's attention for Meta-SpikeFormer's RepConv attention
    (:class:`stlib.layers.spike_driven.SDSA3`, ``num_heads`` heads, no experts) and keeps the
    expert MLP (EMSP). Other attentions are refused. ``embed`` is Spikformer's: an image tokenizer of
    :data:`stlib.layers.ablation.EMBEDDINGS` (``"sps"`` by default) or ``"sequence"`` for
    sequential images (``img_size`` = the sequence length, ``x [B, C, L]``).

    Checkpoints of the port load by :data:`SEMM_LAYOUT`; with ``attn_v_threshold=1.0`` (the
    port's threshold) and ``port_router=True`` (the port's router reshape, see
    :class:`~stlib.layers.semm.EMSA`) the logits equal the port's.
    """

    ablation_host = "spikformer_semm"  # takes the switches of stlib.models.ablation
    official_layout = SEMM_LAYOUT

    def __init__(self, *, img_size: int = 32, in_chans: int = 3, num_classes: int = 10,
                 embed_dim: int = 384, depth: int = 4, num_heads: int = 12,
                 mlp_ratio: float = 4.0, T: int = 4,
                 pool_stages: Sequence[bool] = (False, False, True, True),
                 num_experts: int = 4, expert_dim: int | None = None,
                 attn: str = "emsa", attn_scale: float = 0.125, attn_v_threshold: float = 0.5,
                 port_router: bool = False, embed: str = "sps",
                 neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        if attn not in SEMM_ATTENTIONS:
            raise UnknownNameError("expert attention (argument 'attn') of SpikformerSEMM", attn,
                                   SEMM_ATTENTIONS)
        # Spikformer builds the SPS, the head and the checks; its blocks are replaced below
        super().__init__(img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                         embed_dim=embed_dim, depth=0, num_heads=num_heads, mlp_ratio=mlp_ratio,
                         T=T, pool_stages=pool_stages, embed=embed, neuron=neuron,
                         per_step_logits=per_step_logits)
        attn_layer = get_attention(attn)
        experts = (dict(num_experts=num_experts, expert_dim=expert_dim, port_router=port_router)
                   if attn in EXPERT_ATTENTIONS else {})
        self.blocks = nn.ModuleList(
            SpikingBlock(
                attn=attn_layer(embed_dim, num_heads=num_heads, neuron=self.neuron,
                                scale=attn_scale, attn_v_threshold=attn_v_threshold,
                                **experts),
                mlp=EMSP(embed_dim, int(embed_dim * mlp_ratio), neuron=self.neuron),
            )
            for _ in range(depth)
        )
        self.blocks.apply(_init_weights)


def _create_spikformer_semm(**kwargs) -> SpikformerSEMM:
    return SpikformerSEMM(**kwargs)


@register_model
def spikformer_semm_4_384(**overrides) -> SpikformerSEMM:
    """Spikformer-4-384 + SEMM, CIFAR (4 experts of width 96): 7,739,242 parameters at 10
    classes, 7,773,892 at 100."""
    arch = dict(depth=4, embed_dim=384, num_heads=12, num_experts=4)  # expert_dim D/4 = 96
    return _create_spikformer_semm(**{**arch, **overrides})
