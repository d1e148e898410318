"""Spikformer with the Temporal Interaction Module, TIM (Shen et al., IJCAI 2024), for DVS.

Paper: https://arxiv.org/abs/2401.11687 ; official code BrainCog-X/Brain-Cog examples/TIM
(re-implemented from the facts in shared/reference/MODELS-2.md, section 4).

Spikformer-2-256 for event frames ``[T=10, B, 2, 64, 64]``, top to bottom::

    frames -> SPS (4 x Conv-BN-SN-MaxPool: 64 -> 4, N = 16 tokens, + RPE)
           -> 2 x [ x += SSA_TIM(x) ; x += MLP(x) ]
           -> mean over tokens -> Linear -> mean over T -> logits

``SSA_TIM`` (:class:`stlib.layers.tim.TIMSSA`, ``attn="ssa_tim"``) is Spikformer's SSA with
bias-free Q/K/V/proj, scale 0.25, whose queries pass through TIM:
``Q~[t] = SN_out(alpha SN_in(Conv1d_k5(Q~[t-1])) + (1 - alpha) Q[t])``.

Choices on the official code's quirks (README rows say the same):

* thresholds: the official neuron ignores its ``v_threshold`` argument, so every threshold is
  effectively 1.0. Here the thresholds the code asks for are kept (attention 0.5, TIM in 0.3,
  TIM out 0.5); pass ``attn_v_threshold=1.0, tim_in_v_threshold=1.0, tim_out_v_threshold=1.0``
  for the official behaviour.
* head split: standard (transpose ``[T, B, C, N]`` to tokens, then split C into heads), as
  the official code at BrainCog 3998fd5 does: side by side with it (random weights, eval,
  float64, official thresholds) the logits agree to 1.3e-15. ``untransposed_head_split=True``
  reshapes without the transpose (the "token" axis then indexes channel groups), which
  shared/reference describes as the official split; that commit does not do it.
* TIM's Conv1d runs on each head's query ``[B*h, N, d]`` with the N tokens as channels; the
  official code hard-codes ``d`` channels, which only works because N = d = 16 there.
* the official neuron detaches its membrane every step (no BPTT through it); stlib neurons
  keep the membrane's gradient (only the reset can be detached): not reproduced.
* the two ``LayerNorm`` per block that the official code builds and never uses are not
  built: 2,568,746 parameters at 10 classes (official 2,570,794).

Input size: TIM's conv needs the token count at construction; it is computed from the image
size and the pools. Images too small for the four pools keep the last pools
(:func:`stlib.layers.grid.fit_pools`, as Spikformer does): the quick preset's 8x8 digits
(one channel) build and train with 2x2 = 4 tokens.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from ..layers.grid import fit_pools
from ._registry import register_model
from .official_weights import OfficialLayout
from .spikformer import BLOCK_RENAME, SPS_RENAME, UNUSED_LAYER_NORMS, Spikformer

NeuronFactory = Callable[..., nn.Module]

TIM_LAYOUT = OfficialLayout(
    family="TIM", repo="BrainCog-X/Brain-Cog (examples/TIM/models/spikformer_braincog_DVS.py, TIM.py)",
    rename=SPS_RENAME + BLOCK_RENAME + (
        (r"block\.(\d+)\.attn\.TIM\.interactor\.(weight|bias)", r"blocks.\1.attn.tim.interactor.\2"),),
    # the unused LayerNorms, and BrainCog's neurons store their constant threshold (1.0) and
    # surrogate alpha (4) as frozen parameters: nothing of the function lives there
    unused=(UNUSED_LAYER_NORMS, r".+_lif\d*\.(threshold|act_fun\.alpha)"),
)


class TIMSpikformer(Spikformer):
    """Spikformer (DVS) whose SSA is ``"ssa_tim"``; everything else is :class:`Spikformer`.

    ``x [T, B, C, H, W]`` (event frames, time first) or ``[B, C, H, W]`` (repeated over T)
    -> logits ``[B, classes]`` (mean over T), or ``[T, B, classes]`` with ``per_step_logits``.

    Official checkpoints load by :data:`TIM_LAYOUT`. With ``attn_v_threshold=1.0,
    tim_in_v_threshold=1.0, tim_out_v_threshold=1.0`` (the thresholds the official neuron
    really uses) the logits equal the official model's.
    """

    official_layout = TIM_LAYOUT

    def __init__(self, *, img_size: int = 64, in_chans: int = 2, num_classes: int = 10,
                 embed_dim: int = 256, depth: int = 2, num_heads: int = 16, mlp_ratio: float = 4.0,
                 T: int = 10, pool_stages: Sequence[bool] = (True, True, True, True),
                 attn_scale: float = 0.25, attn_v_threshold: float = 0.5, tim_alpha: float = 0.5,
                 tim_in_v_threshold: float = 0.3, tim_out_v_threshold: float = 0.5,
                 untransposed_head_split: bool = False, neuron: NeuronFactory | None = None,
                 per_step_logits: bool = False):
        pools = fit_pools(img_size, pool_stages)  # what the SPS will use (8x8: the last two)
        grid = img_size // 2 ** sum(pools)
        if untransposed_head_split and grid * grid != embed_dim // num_heads:
            raise ValueError(f"untransposed_head_split needs N == D / heads, got N={grid * grid}, "
                             f"D/heads={embed_dim // num_heads}")
        tim = dict(num_tokens=grid * grid, tim_alpha=tim_alpha, tim_in_v_threshold=tim_in_v_threshold,
                   tim_out_v_threshold=tim_out_v_threshold, untransposed_head_split=untransposed_head_split)
        super().__init__(img_size=img_size, in_chans=in_chans, num_classes=num_classes,
                         embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                         T=T, pool_stages=pool_stages, attn="ssa_tim", attn_scale=attn_scale,
                         attn_v_threshold=attn_v_threshold, attn_kwargs=tim, neuron=neuron,
                         per_step_logits=per_step_logits)
        # the official token layers are Conv1d with PyTorch's default init (only the head
        # Linear gets trunc_normal); Spikformer's init is undone inside the blocks
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()


@register_model
def tim_spikformer_2_256_dvs(**overrides) -> TIMSpikformer:
    """Spikformer-2-256 + TIM, CIFAR10-DVS (64x64 frames, T=10, 16 heads): 2,568,746 parameters."""
    arch = dict(depth=2, embed_dim=256, num_heads=16, img_size=64, in_chans=2, T=10)
    return TIMSpikformer(**{**arch, **overrides})
