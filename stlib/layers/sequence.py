"""Sequence tokenizer: a pixel sequence ``[T, B, C, L]`` -> tokens ``[T, B, N, D]``.

The reference benchmark (STEP, ``sequential_embed``; see shared/reference/STEP.md) reads a
sequential image (sMNIST ``[B, 1, 784]``, sCIFAR10 ``[B, 3, 1024]``) *all at once*: the whole
sequence is repeated over the T time steps (direct encoding, the default here too) and a strided
``Conv1d`` stack cuts it into N = 64 tokens. The sequence is therefore not fed step by step: the
model's time axis T is the spiking time, not the pixel index.

Layout (STEP's, re-implemented from its description)::

    x [T, B, C, L]
      -> 4 x [Conv1d(k=5, stride s_i, bias) -> BN1d] with a neuron after the first three,
         widths D/8, D/4, D/2, D; strides (1, 2, 2, 2), or (2, 2, 2, 2) when L >= 1024
      -> AdaptiveAvgPool1d(N = 64)
      -> x = x_feat + BN1d(Conv1d_k3(SN(x_feat)))  (relative position embedding, with bias)
      -> tokens [T, B, N, D]

Quirks kept from STEP: the padding is computed for a target length ``L_i // s_i`` but with
kernel 5 a stride-2 stage gives one less, so the stages give 784 -> 784 -> 391 -> 195 -> 97
(sMNIST) and 1024 -> 511 -> 255 -> 127 -> 63 (sCIFAR10) before the adaptive pool resamples to 64
tokens. The last conv stage has no neuron and the RPE is added to the pooled BN
output, so the tokens entering the first block are analog (not spikes), unlike SPS's.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .multistep import seq_to_batch

NeuronFactory = Callable[..., nn.Module]

__all__ = ["SequenceAsRow", "SequenceEmbed", "sequence_time_major"]


def sequence_time_major(x: torch.Tensor, *, T: int, in_chans: int, length: int,
                        model: str) -> torch.Tensor:
    """Direct encoding and checks for sequences: -> ``[T, B, C, L]``.

    Accepts ``[B, C, L]`` (repeated T times: direct encoding), ``[T, B, C, L]``, or the
    image-shaped ``[T, B, C, 1, L]`` that :class:`SequenceAsRow` + an image encoder produce.
    Every mismatch is a ``ValueError`` naming the model and the shapes.
    """
    if x.dim() == 5:
        if x.shape[3] != 1:
            raise ValueError(f"{model} reads sequences; a 5-D input must be [T, B, C, 1, L], got "
                             f"shape {tuple(x.shape)}")
        x = x.squeeze(3)
    if x.dim() == 3:
        x = x.unsqueeze(0).repeat(T, 1, 1, 1)
    elif x.dim() != 4:
        raise ValueError(f"{model} expects a sequence [B, C, L] or [T, B, C, L], got shape "
                         f"{tuple(x.shape)}")
    elif x.shape[0] != T:
        raise ValueError(f"input has {x.shape[0]} time steps, {model} was built for T={T}")
    if tuple(x.shape[2:]) != (in_chans, length):
        raise ValueError(f"sequence {tuple(x.shape[2:])} does not match {model}'s (C, L) = "
                         f"({in_chans}, {length})")
    return x


class SequenceAsRow(nn.Module):
    """``[B, C, L] -> [B, C, 1, L]``: a sequence as a one-row image, so that the image encoders
    (elementwise, per-channel normalization over ``[C, H, W]``) apply unchanged; the sequence
    models accept the resulting ``[T, B, C, 1, L]``. Other shapes pass through untouched."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2) if x.dim() == 3 else x


class SequenceEmbed(nn.Module):
    """STEP's ``sequential_embed``: ``x [T, B, C, L] -> tokens [T, B, num_tokens, D]``.

    Stage i: ``h = BN(Conv1d(h))`` with kernel 5 and stride ``s_i`` (padding chosen so the
    length becomes ``L_i / s_i`` as STEP computes it), then ``h = SN(h)`` for i < 3. Then
    ``h = AdaptiveAvgPool1d(num_tokens)(h)`` and ``tokens = h + BN(Conv1d_3(SN(h)))``.
    """

    def __init__(self, *, seq_len: int, in_chans: int, embed_dim: int, neuron: NeuronFactory,
                 num_tokens: int = 64, kernel_size: int = 5):
        super().__init__()
        if embed_dim % 8:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by 8 (stage widths D/8..D)")
        if seq_len <= 0:
            raise ValueError(f"sequence length must be positive, got {seq_len}")
        # STEP: a long sequence (sCIFAR, 1024) halves at every stage, a shorter one keeps the
        # first stage at full resolution
        strides = (2, 2, 2, 2) if seq_len >= 1024 else (1, 2, 2, 2)
        widths = [embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
        convs, length = [], seq_len
        for c_in, c_out, s in zip([in_chans, *widths[:-1]], widths, strides):
            target = length // s
            padding = max(0, ((target - 1) * s + kernel_size - length) // 2)
            convs.append(nn.Sequential(nn.Conv1d(c_in, c_out, kernel_size, s, padding),
                                       nn.BatchNorm1d(c_out)))
            length = target
        self.stages = nn.ModuleList(convs)
        self.neurons = nn.ModuleList(neuron() for _ in widths[:-1])  # none after the last stage
        self.pool = nn.AdaptiveAvgPool1d(num_tokens)
        self.rpe_neuron = neuron()
        self.rpe = nn.Sequential(nn.Conv1d(embed_dim, embed_dim, 3, 1, 1),
                                 nn.BatchNorm1d(embed_dim))
        self.seq_len, self.in_chans, self.num_patches = seq_len, in_chans, num_tokens
        self.strides = strides

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages):
            x = seq_to_batch(stage, x)
            if i < len(self.neurons):
                x = self.neurons[i](x)
        x = seq_to_batch(self.pool, x)  # [T, B, D, N]
        x = x + seq_to_batch(self.rpe, self.rpe_neuron(x))
        return x.transpose(2, 3).contiguous()  # [T, B, N, D]
