"""MST, the Masked Spiking Transformer (Wang, Fang et al., ICCV 2023).

Paper: "Masked Spiking Transformer" (https://arxiv.org/abs/2210.01208); official code:
bic-L/Masked-Spiking-Transformer ``models/mst.py``, ``modules_QCFS.py``, ``utils_QCFS.py``,
``configs/mst/MST.yaml``, re-implemented from the architecture facts in
shared/reference/MODELS-2.md, section 10, and the official code.

A Swin-T backbone (patch 4, widths 96/192/384/768, depths 2/2/6/2, heads 3/6/12/24, window
7, shifted windows every second block) made convertible to a spiking network:

* every activation is a neuron site (Q, K, V, attention map, attention output, projection,
  both MLP layers, patch embedding, patch merging and both pre-branch "shortcut" sites of a
  block: 124 sites in Swin-T);
* BatchNorm1d replaces the LayerNorms inside the blocks, the patch embedding and the patch
  merging (the final norm before the head stays a LayerNorm); the ImageNet MLP has a BN
  after each Linear, the CIFAR one none (``mlp_bn``, the official ``dataset`` switch);
* **Random Spike Masking** (``masking_ratio``): Bernoulli masks on the Q, K and
  attention-map spikes, in training and at inference (:mod:`stlib.layers.window`).

Training is ANN-to-SNN conversion: with ``neuron="QCFS"`` (the default; lambda 2.0, 16 levels)
the network is an ANN trained at T = 1; :func:`stlib.neurons.convert_to_snn` then swaps each
QCFS for an IF neuron (soft reset, V_0 = lambda/2) and the converted model runs T steps
(the official ``--sim_len``, 128 in its README) and averages the logits. Any other neuron
trains the same network directly.

Quirks of the official code kept here: after the MLP's BN ``norm2`` the residual continues
from the normalised tokens (``x = norm2(x); x = x + mlp(SN(x))``); the softmax of the
attention stays inside the converted SNN; the MLP input is not masked (the paper's Fig. 2e
masks it; the code stores the ratio in the MLP but never applies it). Parameters
(official, QCFS clips included): ImageNet ``mst`` 28,332,638; CIFAR ``mst_cifar10``
27,527,168 and ``mst_cifar100`` 27,596,378 (224 px input: the official CIFAR pipeline
resizes to 224). Logits equal the official code's (0.0 in float64 at 224 px for the
ImageNet and CIFAR layouts, random weights, clips and BN statistics, eval mode; also with
``masking_ratio`` 0.75 under the same seed), and the converted SNN equals the official
``snn_validate`` loop (8.9e-16 at T = 16). With masking, the SNN draws each site's masks for
all T steps at once, the official loop one step at a time: the same distribution, another
random stream. The official checkpoints carry the shift masks and position indices as
buffers; stlib rebuilds them from the config and skips them on load.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers import MeanTokenHead, SpikingMLP
from ..layers.init import trunc_normal_linear_init
from ..layers.input_check import to_time_major
from ..layers.multistep import SampleDropPath
from ..layers.window import (SpikingPatchMerging, SpikingWindowAttention, batch_norm_tokens,
                             shifted_window_mask, tokens_of, windows_of)
from ..neurons import neuron_factory
from ._registry import register_model
from .official_weights import OfficialLayout, PublishedCheckpoint
from .spikformer import NeuronFactory

_RELEASES = "https://github.com/bic-L/Masked-Spiking-Transformer/releases/download"

_NEURON_RENAME = (
    (r"(patch_embed|.+\.downsample)\.(?:proj|reduction)_if\.up", r"\1.neuron.threshold"),
    (r"(.+)\.(q|k|v|attn|attn_v|proj|fc1|fc2|shortcut1|shortcut2)_if\.up", r"\1.\2_neuron.threshold"),
    (r"head\.(weight|bias)", r"head.fc.\1"),
    # the names stlib shares with the official code
    (r"(patch_embed\.(?:proj|norm)\..+|norm\.(?:weight|bias)|layers\.\d+\.downsample\.(?:reduction|norm)\..+)",
     r"\1"),
    (r"(layers\.\d+\.blocks\.\d+\.(?:norm[12]\..+|attn\.(?:qkv\..+|proj\..+|relative_position_bias_table)))",
     r"\1"),
)
_CHECKPOINTS = {
    "mst": PublishedCheckpoint(f"{_RELEASES}/checkpoint/imagenet_checkpoint.pth",
                               "imagenet", 78.51, "SNN after conversion (STEP's table)"),
    "mst_cifar10": PublishedCheckpoint(f"{_RELEASES}/checkpoint/Cifar10_checkpoint.pth",
                                       "cifar10", 97.27, "SNN after conversion (STEP's table)"),
    "mst_cifar100": PublishedCheckpoint(f"{_RELEASES}/checkpoint/Cifar100_checkpoint.pth",
                                        "cifar100", 86.91, "SNN after conversion (STEP's table)"),
}
#: the official names are stlib's but for the QCFS clips (``*_if.up``), the head and, with
#: BN in the MLP (ImageNet), the MLP's Linear-BN pairs; the official position-index and
#: shift-mask buffers are constants of the config, which stlib rebuilds and does not save
_DERIVED = (r".+\.relative_position_index", r".+\.attn_mask")
MST_LAYOUTS = {
    True: OfficialLayout(
        family="MST", repo="bic-L/Masked-Spiking-Transformer (models/mst.py, ImageNet)",
        rename=(*_NEURON_RENAME,
                (r"(.+\.mlp)\.fc([12])\.(weight|bias)", r"\1.fc\2.linear.\3"),
                (r"(.+\.mlp)\.norm([12])\.(.+)", r"\1.fc\2.bn.\3")),
        unused=_DERIVED, checkpoints=_CHECKPOINTS),
    False: OfficialLayout(
        family="MST", repo="bic-L/Masked-Spiking-Transformer (models/mst.py, CIFAR)",
        rename=(*_NEURON_RENAME, (r"(.+\.mlp\.fc[12]\.(?:weight|bias))", r"\1")), unused=_DERIVED),
}


class SpikingPatchEmbed(nn.Module):
    """``x [T, B, C, H, W] -> SN(BN(Conv_pxp(x)))`` tokens ``[T, B, (H/p)(W/p), D]``."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, *, neuron: NeuronFactory):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = nn.BatchNorm1d(embed_dim)
        self.neuron = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        tokens = self.proj(x.flatten(0, 1)).flatten(2).transpose(1, 2)  # [T*B, N, D]
        tokens = batch_norm_tokens(self.norm, tokens)
        return self.neuron(tokens.reshape(T, B, *tokens.shape[1:]))


class MSTBlock(nn.Module):
    """One (shifted-)window block, ``x [T, B, H*W, C] -> [T, B, H*W, C]``::

        x = x + W-MSA(SN(BN(x)))           # windows shifted by M/2 when shift > 0
        x = BN(x); x = x + MLP(SN(x))      # the residual continues from BN(x) (official)

    A grid no larger than the window is one window, unshifted (the official rule). A larger
    grid the window does not tile (not an official size, e.g. 8x8 tokens of a 32 px image
    with window 7) takes the largest window that does (4), shifted by half of it: stlib's
    choice, where the official code would fail.
    """

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, *, window: int,
                 shift: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 masking_ratio: float, mlp_bn: bool, neuron: NeuronFactory):
        super().__init__()
        if min(resolution) <= window:  # one window covers the grid: no partition, no shift
            window, shift = min(resolution), 0
        elif any(side % window for side in resolution):  # not an official size: our choice,
            window = max(w for w in range(1, window) if all(side % w == 0 for side in resolution))
            shift = shift and window // 2  # the largest window that tiles the grid
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.BatchNorm1d(dim)
        self.shortcut1_neuron = neuron()
        self.attn = SpikingWindowAttention(dim, window, num_heads, neuron=neuron,
                                           qkv_bias=qkv_bias, masking_ratio=masking_ratio)
        self.drop_path = SampleDropPath(drop_path)
        self.norm2 = nn.BatchNorm1d(dim)
        self.shortcut2_neuron = neuron()
        self.mlp = SpikingMLP(dim, int(dim * mlp_ratio), neuron=neuron, batch_norm=mlp_bn)
        self.register_buffer("attn_mask", shifted_window_mask(resolution, window, shift),
                             persistent=False)  # derived from the grid: not saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shortcut1_neuron(batch_norm_tokens(self.norm1, x))
        windows = windows_of(s, self.resolution, self.window, self.shift)
        attn = self.attn(windows, mask=self.attn_mask)
        x = x + self.drop_path(tokens_of(attn, self.resolution, self.window, self.shift))
        x = batch_norm_tokens(self.norm2, x)
        return x + self.drop_path(self.mlp(self.shortcut2_neuron(x)))


class MSTStage(nn.Module):
    """``depth`` blocks (shift 0, M/2, 0, ...), then patch merging unless it is the last stage."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, *,
                 window: int, drop_path: Sequence[float], downsample: bool, neuron: NeuronFactory,
                 **block_args):
        super().__init__()
        self.blocks = nn.ModuleList(
            MSTBlock(dim, resolution, num_heads, window=window,
                     shift=0 if i % 2 == 0 else window // 2, drop_path=drop_path[i],
                     neuron=neuron, **block_args)
            for i in range(depth))
        self.downsample = SpikingPatchMerging(resolution, dim, neuron=neuron) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class MaskedSpikingTransformer(nn.Module):
    """MST for static images or pre-encoded input.

    ``x [B, C, H, W]`` (repeated T times: direct encoding) or ``[T, B, C, H, W]`` -> logits
    ``[B, classes]`` (the mean over T), or ``[T, B, classes]`` with ``per_step_logits``.
    ``neuron=None`` is QCFS (lambda 2.0, 16 levels) at T = 1: the ANN the official code
    trains. :func:`stlib.neurons.convert_to_snn` makes the spiking model. Stage sizes:
    ``depths`` / ``num_heads`` per stage, or ``depth`` and an int ``num_heads`` (see
    :func:`fit_stages`, which also drops the stages a small image cannot halve into).
    """

    def official_layout(self) -> OfficialLayout:
        return MST_LAYOUTS[self.mlp_bn]

    def __init__(self, *, img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: int | Sequence[int] = (3, 6, 12, 24), depth: int | None = None,
                 window_size: int = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.2, masking_ratio: float = 0.0, mlp_bn: bool = True,
                 T: int = 1, neuron: NeuronFactory | None = None, per_step_logits: bool = False):
        super().__init__()
        if T <= 0:
            raise ValueError(f"T must be a positive number of time steps, got {T}")
        if not 0.0 <= masking_ratio < 1.0:
            raise ValueError(f"masking_ratio must be in [0, 1), got {masking_ratio}")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} does not split into patches of {patch_size}")
        grid = img_size // patch_size
        depths, num_heads = fit_stages(grid, depths, num_heads, depth)
        self.depths, self.num_heads = depths, num_heads
        neuron = neuron or neuron_factory("QCFS", T=T)
        self.T, self.img_size, self.in_chans = T, img_size, in_chans
        self.num_classes, self.masking_ratio, self.mlp_bn = num_classes, masking_ratio, mlp_bn
        self.patch_embed = SpikingPatchEmbed(patch_size, in_chans, embed_dim, neuron=neuron)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # depth decay
        self.layers = nn.ModuleList()
        for i, (blocks, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            self.layers.append(MSTStage(
                embed_dim * 2 ** i, (grid // 2 ** i, grid // 2 ** i), blocks, heads,
                window=window_size, drop_path=rates[start:start + blocks],
                downsample=i < len(depths) - 1, neuron=neuron, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, masking_ratio=masking_ratio, mlp_bn=mlp_bn))
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = MeanTokenHead(self.num_features, num_classes, per_step=per_step_logits)
        self.apply(trunc_normal_linear_init)  # the official init

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = to_time_major(x, T=self.T, in_chans=self.in_chans, img_size=self.img_size, model="MST")
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)  # [T, B, N, D]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def cam_target_layer(self) -> nn.Module:
        """Grad-CAM's default target: the input of the last block's MLP (``[T, B, N, D]``) in
        the last stage whose grid is at least 2x2 (a 32 px image ends on one token)."""
        stage = next((layer for layer in reversed(self.layers)
                      if min(layer.blocks[-1].resolution) >= 2), self.layers[0])
        return stage.blocks[-1].mlp.input


def fit_stages(grid: int, depths: Sequence[int], num_heads: int | Sequence[int],
               depth: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Stage depths and heads for a ``grid x grid`` patch grid.

    ``depth`` (when set) gives every stage that many blocks; an int ``num_heads`` is the first
    stage's, doubled per stage (Swin's 3/6/12/24). Each stage after the first halves the grid,
    so a grid too small for all of them (the quick preset's 8x8 digits: 2x2 patches) keeps
    the leading stages that divide it; the official sizes keep all four.
    """
    depths = tuple(depths) if depth is None else (int(depth),) * len(depths)
    if isinstance(num_heads, int):
        num_heads = tuple(num_heads * 2 ** i for i in range(len(depths)))
    num_heads = tuple(num_heads)
    if len(depths) != len(num_heads):
        raise ValueError(f"depths {depths} and num_heads {num_heads} differ in length")
    stages = len(depths)
    while stages > 1 and grid % 2 ** (stages - 1):
        stages -= 1
    return depths[:stages], num_heads[:stages]


@register_model
def mst(**overrides) -> MaskedSpikingTransformer:
    """MST (Swin-T widths 96..768, depths 2/2/6/2), ImageNet at 224 px: 28,332,638 parameters."""
    return MaskedSpikingTransformer(**overrides)


@register_model
def mst_cifar10(**overrides) -> MaskedSpikingTransformer:
    """MST on CIFAR-10 as the official pipeline runs it (images resized to 224 px, no MLP BN):
    27,527,168 parameters."""
    return MaskedSpikingTransformer(**{"num_classes": 10, "mlp_bn": False, **overrides})


@register_model
def mst_cifar100(**overrides) -> MaskedSpikingTransformer:
    """MST on CIFAR-100 (224 px, no MLP BN): 27,596,378 parameters."""
    return MaskedSpikingTransformer(**{"num_classes": 100, "mlp_bn": False, **overrides})
