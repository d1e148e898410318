"""Low-bit weights by Learned Step Size Quantization (LSQ, Esser et al. ICLR 2020), as QSD
uses them (bollossom/QSD-Transformer ``classification/quan_w.py``: ``Conv2dLSQ``,
``Conv1dLSQ``, ``LinearLSQ`` with ``nbits_w=4``, per-output-channel step sizes).

Per output channel c, with ``Q_n = -2^(b-1)``, ``Q_p = 2^(b-1) - 1``:

    w_q = round(clamp(w / alpha_c, Q_n, Q_p)) * alpha_c

with a straight-through round and the step-size gradient scaled by
``g = 1 / sqrt(numel(w) * Q_p)``. ``alpha`` starts at ``2 mean|w| / sqrt(Q_p)`` for every
channel, set again from the weights at the first training forward (``init_state``), as in
the official code, so a model whose weights were changed or loaded before training starts
from its own weights' scale. Activations are not quantized: the official ``ActLSQ`` inside
each layer returns its input unchanged (its unused parameters are not built here).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["QuantConv2d", "QuantLinear", "quantize_weights", "lsq_weight"]


def _scaled_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` forward, ``scale * grad`` backward."""
    return (x - x * scale).detach() + x * scale


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


class _LSQ:
    """The step sizes and the quantized weight, mixed into ``nn.Conv2d`` / ``nn.Linear``."""

    bits: int

    def _init_quantizer(self, bits: int) -> None:
        if int(bits) != bits or bits < 2:
            raise ValueError(f"weight bits must be an integer >= 2, got {bits!r}")
        self.bits = int(bits)
        self.alpha = nn.Parameter(torch.empty(self.weight.shape[0], dtype=self.weight.dtype,
                                              device=self.weight.device))
        self.register_buffer("init_state", torch.zeros(1, device=self.weight.device))
        with torch.no_grad():
            self.alpha.fill_(self._initial_step())

    def _initial_step(self) -> torch.Tensor:
        return 2 * self.weight.detach().abs().mean() / math.sqrt(2 ** (self.bits - 1) - 1)

    def quantized_weight(self) -> torch.Tensor:
        if self.training and self.init_state == 0:
            with torch.no_grad():
                self.alpha.fill_(self._initial_step())
                self.init_state.fill_(1)
        return lsq_weight(self.weight, self.alpha, self.bits)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.bits}"


def lsq_weight(weight: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """``round(clamp(w / alpha, Q_n, Q_p)) * alpha`` per output channel (dim 0 of ``weight``)."""
    q_n, q_p = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    step = _scaled_grad(alpha, 1.0 / math.sqrt(weight.numel() * q_p))
    step = step.reshape(-1, *([1] * (weight.dim() - 1)))
    return _round_ste((weight / step).clamp(q_n, q_p)) * step


class QuantConv2d(_LSQ, nn.Conv2d):
    """``nn.Conv2d`` with LSQ weights (``alpha`` ``[out_channels]``)."""

    def __init__(self, *args, weight_bits: int = 4, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quantizer(weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantLinear(_LSQ, nn.Linear):
    """``nn.Linear`` with LSQ weights (``alpha`` ``[out_features]``)."""

    def __init__(self, *args, weight_bits: int = 4, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quantizer(weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


def _quantized_copy(layer: nn.Module, bits: int) -> nn.Module:
    if isinstance(layer, nn.Conv2d):
        new = QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                          layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                          layer.padding_mode, weight_bits=bits)
    else:
        new = QuantLinear(layer.in_features, layer.out_features, layer.bias is not None,
                          weight_bits=bits)
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(layer.weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
        new.alpha.fill_(new._initial_step())
    return new


def quantize_weights(model: nn.Module, bits: int) -> nn.Module:
    """Replace every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` (in place) by its LSQ
    version with the same weights; returns ``model``. Names and state-dict keys are kept
    (plus ``alpha`` and ``init_state`` per layer)."""
    for name, child in list(model.named_children()):
        if type(child) in (nn.Conv2d, nn.Linear):
            setattr(model, name, _quantized_copy(child, bits))
        else:
            quantize_weights(child, bits)
    return model
